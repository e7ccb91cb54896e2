//! `vault-cli alerts list`: the alerts on suspicious access the node raised recently (the
//! audit log keeps every one as a record of kind `alert`).

use clap::Subcommand;
use serde::Serialize;
use vault_proto::v1::{self, system_client::SystemClient};

use crate::{
    Format,
    client::{CliResult, Ctx},
    output::{Show, show},
};

#[derive(Subcommand, Debug)]
pub enum AlertsCommand {
    /// The node's recent alerts, newest first (system scope).
    List {
        /// At most this many (at most 1000).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Serialize)]
struct Alert {
    time: String,
    rule: String,
    principal: String,
    tenant: String,
    source: String,
    detail: String,
}

#[derive(Serialize)]
struct Alerts {
    alerts: Vec<Alert>,
}

impl Show for Alerts {
    fn text(&self) -> String {
        if self.alerts.is_empty() {
            return "No alerts.\n".to_owned();
        }
        self.alerts
            .iter()
            .map(|a| {
                format!(
                    "{}  {:<11}  tenant {}  from {}  {}\n",
                    a.time,
                    a.rule,
                    if a.tenant.is_empty() { "-" } else { &a.tenant },
                    a.source,
                    a.detail
                )
            })
            .collect()
    }
}

pub async fn alerts(ctx: &Ctx, command: AlertsCommand, format: Format) -> CliResult<()> {
    let AlertsCommand::List { limit } = command;
    let response = call!(
        ctx,
        SystemClient::new,
        list_alerts,
        v1::ListAlertsRequest { limit }
    )
    .await?;
    let alerts = Alerts {
        alerts: response
            .alerts
            .into_iter()
            .map(|a| Alert {
                time: a.time,
                rule: a.rule,
                principal: a.principal,
                tenant: a.tenant,
                source: a.source,
                detail: a.detail,
            })
            .collect(),
    };
    show(&alerts, format)
}
