//! `vault-cli init`, `unseal`, `status` and `seal`: the seal state machine.

use serde::Serialize;
use vault_proto::v1::{self, system_client::SystemClient};

use crate::{
    client::{CliResult, Ctx},
    input::read_share,
    output::{Field, Show, rows_text, show},
    share::{RecipientArgs, shares_text, system},
};

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// Number of unseal shares to create.
    #[arg(long, default_value_t = 5)]
    shares: u32,
    /// Number of shares needed to unseal.
    #[arg(long, default_value_t = 3)]
    threshold: u32,
    #[command(flatten)]
    recipients: RecipientArgs,
    /// Encrypt the root token to this age public key (age1...).
    #[arg(long, value_name = "AGE_RECIPIENT")]
    root_token_recipient: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct UnsealArgs {
    /// Read the share from this file.
    #[arg(long, value_name = "FILE")]
    share_file: Option<std::path::PathBuf>,
    /// Forget the shares submitted so far. Needs one current share (read like any other, and
    /// not counted), so that nobody without one can reset the operators' progress.
    #[arg(long)]
    reset: bool,
}

/// What init hands out, once.
#[derive(Serialize)]
struct Initialized<'a> {
    shares: &'a [String],
    root_token: &'a str,
    threshold: u32,
    shares_encrypted: bool,
    root_token_encrypted: bool,
    seal_type: &'a str,
}

impl Show for Initialized<'_> {
    fn text(&self) -> String {
        let auto = self.seal_type != "shamir" && !self.seal_type.is_empty();
        let label = if auto {
            "Recovery share"
        } else {
            "Unseal share"
        };
        let mut out = shares_text(self.shares, self.shares_encrypted, label);
        if self.root_token_encrypted {
            out.push_str("Root token (encrypted to its recipient):\n");
        } else {
            out.push_str("Root token: ");
        }
        out.push_str(self.root_token);
        if auto {
            out.push_str(&format!(
                "\n\nThe vault is initialized and unsealed by its {} seal, and unseals itself at \
                 every start. The shares are recovery shares: any {} of the {} authorize rekey, \
                 generate-root and seal-migrate, and unseal nothing. Give each to a different \
                 operator. They are shown only now.\n",
                self.seal_type,
                self.threshold,
                self.shares.len()
            ));
        } else {
            out.push_str(&format!(
                "\n\nThe vault is initialized and sealed. Give each share to a different operator; any \
                 {} of the {} shares unseal it (`vault-cli unseal`). They are shown only now.\n",
                self.threshold,
                self.shares.len()
            ));
        }
        std::mem::take(&mut *out)
    }
}

#[derive(Serialize)]
struct Unsealed {
    sealed: bool,
    threshold: u32,
    shares: u32,
    progress: u32,
}

impl From<v1::UnsealResponse> for Unsealed {
    fn from(response: v1::UnsealResponse) -> Self {
        Unsealed {
            sealed: response.sealed,
            threshold: response.threshold,
            shares: response.shares,
            progress: response.progress,
        }
    }
}

impl Show for Unsealed {
    fn text(&self) -> String {
        if self.sealed {
            format!(
                "Vault is sealed: {}/{} shares entered.\n",
                self.progress, self.threshold
            )
        } else {
            "Vault is unsealed.\n".to_owned()
        }
    }
}

#[derive(Serialize)]
struct SealStatus {
    initialized: bool,
    sealed: bool,
    threshold: u32,
    shares: u32,
    progress: u32,
    version: String,
    node_id: String,
    storage: String,
    role: String,
    active_node: String,
    active_address: String,
    members: u32,
    etcd_revision: i64,
    seal_type: String,
    seal_error: String,
}

impl Show for SealStatus {
    fn text(&self) -> String {
        let mut text = rows_text(&[
            ("Seal type", self.seal_type.clone()),
            ("Initialized", self.initialized.to_string()),
            ("Sealed", self.sealed.to_string()),
            ("Shares", self.shares.to_string()),
            ("Threshold", self.threshold.to_string()),
            (
                "Unseal progress",
                format!("{}/{}", self.progress, self.threshold),
            ),
            ("Version", self.version.clone()),
            ("Node", self.node_id.clone()),
            ("Storage", self.storage.clone()),
            ("Role", self.role.clone()),
            (
                "Active node",
                match (self.active_node.as_str(), self.active_address.as_str()) {
                    ("", _) => "(none elected)".to_owned(),
                    (id, "") => id.to_owned(),
                    (id, address) => format!("{id} ({address})"),
                },
            ),
            ("Members", self.members.to_string()),
            ("Etcd revision", self.etcd_revision.to_string()),
        ]);
        if !self.seal_error.is_empty() {
            text.push_str(&format!("Seal error: {}\n", self.seal_error));
        }
        text
    }
}

pub async fn init(ctx: &Ctx, args: InitArgs) -> CliResult<()> {
    let share_recipients = args.recipients.read()?;
    if share_recipients.is_empty() {
        eprintln!(
            "vault-cli: warning: every unseal share and the root token are shown to you in the \
             clear, so you hold a threshold alone; give --share-recipient (one age public key \
             per operator) to hand each share to its holder encrypted"
        );
    }
    let request = v1::InitRequest {
        shares: args.shares,
        threshold: args.threshold,
        share_recipients,
        root_token_recipient: args.root_token_recipient.unwrap_or_default(),
    };
    let response = ctx.answer(system(ctx).await?.init(request).await)?;
    show(
        &Initialized {
            shares: &response.shares,
            root_token: &response.root_token,
            threshold: response.threshold,
            shares_encrypted: response.shares_encrypted,
            root_token_encrypted: response.root_token_encrypted,
            seal_type: &response.seal_type,
        },
        ctx.format,
    )
}

pub async fn unseal(ctx: &Ctx, args: UnsealArgs) -> CliResult<()> {
    let share = read_share(args.share_file.as_deref())?;
    let request = v1::UnsealRequest {
        share: share.as_str().to_owned(),
        reset: args.reset,
    };
    let response = ctx.answer(system(ctx).await?.unseal(request).await)?;
    show(&Unsealed::from(response), ctx.format)
}

/// Shows the seal status; the exit code is 2 while the vault is sealed (or not initialised),
/// 0 when it is unsealed, as Vault's `status` says it.
pub async fn status(ctx: &Ctx) -> CliResult<u8> {
    let s = ctx.answer(system(ctx).await?.status(v1::StatusRequest {}).await)?;
    let code = if s.initialized && !s.sealed { 0 } else { 2 };
    let status = SealStatus {
        initialized: s.initialized,
        sealed: s.sealed,
        threshold: s.threshold,
        shares: s.shares,
        progress: s.progress,
        version: s.version,
        node_id: s.node_id,
        storage: s.storage,
        role: s.role,
        active_node: s.active_node,
        active_address: s.active_address,
        members: s.members,
        etcd_revision: s.etcd_revision,
        seal_type: s.seal_type,
        seal_error: s.seal_error,
    };
    show(&status, ctx.format)?;
    Ok(code)
}

pub async fn seal(ctx: &Ctx) -> CliResult<()> {
    call!(ctx, SystemClient::new, seal, v1::SealRequest {}).await?;
    let sealed = Field::new("sealed", true, "Vault is sealed.\n".to_owned());
    show(&sealed, ctx.format)
}

#[derive(clap::Subcommand, Debug)]
pub enum ClusterCommand {
    /// Every node with a live membership record: id, address, role, sealed, last heartbeat.
    Members,
    /// The active node gives up leadership; another unsealed node takes it (system scope).
    StepDown,
}

#[derive(Serialize)]
struct Members {
    members: Vec<Member>,
}

#[derive(Serialize)]
struct Member {
    id: String,
    address: String,
    role: String,
    sealed: bool,
    last_heartbeat: String,
}

impl Show for Members {
    fn text(&self) -> String {
        let mut out = format!(
            "{:<16} {:<22} {:<8} {:<6} {}\n",
            "ID", "ADDRESS", "ROLE", "SEALED", "LAST HEARTBEAT"
        );
        for m in &self.members {
            out.push_str(&format!(
                "{:<16} {:<22} {:<8} {:<6} {}\n",
                m.id, m.address, m.role, m.sealed, m.last_heartbeat
            ));
        }
        out
    }
}

pub async fn cluster(ctx: &Ctx, command: ClusterCommand) -> CliResult<()> {
    match command {
        ClusterCommand::Members => {
            let response = call!(
                ctx,
                SystemClient::new,
                cluster_members,
                v1::ClusterMembersRequest {}
            )
            .await?;
            let members = Members {
                members: response
                    .members
                    .into_iter()
                    .map(|m| Member {
                        id: m.id,
                        address: m.address,
                        role: m.role,
                        sealed: m.sealed,
                        last_heartbeat: m.last_heartbeat,
                    })
                    .collect(),
            };
            show(&members, ctx.format)
        }
        ClusterCommand::StepDown => {
            call!(ctx, SystemClient::new, step_down, v1::StepDownRequest {}).await?;
            let done = Field::new(
                "stepped_down",
                true,
                "The active node is stepping down; another unsealed node takes over.\n".to_owned(),
            );
            show(&done, ctx.format)
        }
    }
}
