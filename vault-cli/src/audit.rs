//! `vault-cli audit ...`: offline verification, query, export and the public key.

use std::{io::Write, path::PathBuf, time::Instant};

use serde::Serialize;
use tokio_stream::StreamExt;
use vault_core::audit::{
    record::{line_hash, parse_public_key},
    verify,
};
use vault_proto::v1::{self, audit_client::AuditClient};

use crate::{
    Format,
    client::{CliError, CliResult, Ctx},
    output::Field,
    output::{Show, show},
};

#[derive(clap::Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the Ed25519 public key that signs checkpoints (base64); pin it for `verify`.
    PublicKey {
        /// Also write it to this file.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Verify an audit directory offline: chain, sequence and checkpoint signatures.
    ///
    /// Exit code 0 only if everything verifies against the pinned key.
    Verify {
        /// The audit directory (DATA_DIR/audit by default on the server).
        #[arg(long)]
        dir: PathBuf,
        /// File holding the pinned public key (from `audit public-key --out`).
        #[arg(long, value_name = "FILE")]
        public_key: PathBuf,
        /// Also compare the log's head with the running server's (needs VAULT_ADDR and
        /// VAULT_TOKEN): catches records cut off the tail.
        #[arg(long)]
        against_server: bool,
        /// Most records allowed after the last verified checkpoint (the server signs every
        /// 1000 records or 1 s while unsealed; records written while it is sealed wait for the
        /// first checkpoint after unseal).
        #[arg(long, default_value_t = 2_000)]
        max_unsigned: u64,
    },
    /// Query records, oldest first, a page at a time.
    Query(QueryArgs),
    /// Stream every record since a time as JSON lines.
    Export {
        /// RFC 3339; everything when absent.
        #[arg(long, default_value = "")]
        since: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct QueryArgs {
    #[arg(long = "tenant", default_value = "")]
    tenant: String,
    #[arg(long, default_value = "")]
    principal: String,
    #[arg(long, default_value = "")]
    path_prefix: String,
    /// Full (/vault.v1.Secrets/Get) or short (Get).
    #[arg(long, default_value = "")]
    method: String,
    /// ok, denied, error or crashed.
    #[arg(long, default_value = "")]
    outcome: String,
    /// RFC 3339, inclusive.
    #[arg(long, default_value = "")]
    since: String,
    /// RFC 3339, exclusive.
    #[arg(long, default_value = "")]
    until: String,
    #[arg(long, default_value_t = 0)]
    page_size: u32,
    #[arg(long, default_value = "")]
    page_token: String,
}

impl From<QueryArgs> for v1::AuditQueryRequest {
    fn from(args: QueryArgs) -> Self {
        v1::AuditQueryRequest {
            tenant: args.tenant,
            principal: args.principal,
            path_prefix: args.path_prefix,
            method: args.method,
            outcome: args.outcome,
            since: args.since,
            until: args.until,
            page_size: args.page_size,
            page_token: args.page_token,
        }
    }
}

/// A page of records: JSON objects under "records", or the lines as they are.
#[derive(Serialize)]
struct Page {
    #[serde(serialize_with = "records_json")]
    records: Vec<String>,
    next_page_token: String,
}

/// The records that parse as JSON (they all do, as the server writes them).
fn records_json<S: serde::Serializer>(records: &[String], out: S) -> Result<S::Ok, S::Error> {
    out.collect_seq(
        records
            .iter()
            .filter_map(|r| serde_json::from_str::<serde_json::Value>(r).ok()),
    )
}

impl Show for Page {
    fn text(&self) -> String {
        self.records.iter().map(|r| format!("{r}\n")).collect()
    }
}

pub async fn run(ctx: &Ctx, command: AuditCommand, format: Format) -> CliResult<()> {
    let new = AuditClient::new;
    match command {
        AuditCommand::PublicKey { out } => {
            let mut client = new(ctx.connect().await?);
            let request = v1::AuditPublicKeyRequest {};
            let key = ctx.answer(client.public_key(request).await)?.public_key;
            if let Some(path) = out {
                std::fs::write(&path, format!("{key}\n"))
                    .map_err(|e| CliError::new(format!("cannot write {}: {e}", path.display())))?;
            }
            let text = format!("{key}\n");
            show(&Field::new("public_key", key, text), format)
        }
        AuditCommand::Verify {
            dir,
            public_key,
            against_server,
            max_unsigned,
        } => verify_command(ctx, dir, public_key, against_server, max_unsigned, format).await,
        AuditCommand::Query(args) => {
            let request = v1::AuditQueryRequest::from(args);
            let response = call!(ctx, new, query, request).await?;
            let page = Page {
                records: response.records,
                next_page_token: response.next_page_token,
            };
            show(&page, format)?;
            if format == Format::Text && !page.next_page_token.is_empty() {
                eprintln!("(more: --page-token {})", page.next_page_token);
            }
            Ok(())
        }
        AuditCommand::Export { since } => {
            let mut stream = call!(ctx, new, export, v1::AuditExportRequest { since }).await?;
            let mut out = std::io::stdout().lock();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|s| ctx.status_error(s))?;
                out.write_all(chunk.lines.as_bytes())
                    .map_err(|e| CliError::new(format!("cannot write to standard output: {e}")))?;
            }
            out.flush()
                .map_err(|e| CliError::new(format!("cannot write to standard output: {e}")))
        }
    }
}

#[derive(Serialize)]
struct Broken {
    file: PathBuf,
    offset: u64,
    reason: String,
}

/// What `verify` found.
#[derive(Serialize)]
struct Verified {
    ok: bool,
    records: u64,
    bytes: u64,
    seconds: f64,
    megabytes_per_second: f64,
    checkpoints_verified: u64,
    unsigned_tail: u64,
    head_seq: u64,
    head_hash: String,
    first_broken: Option<Broken>,
    server: Option<String>,
    partial_tail: Option<String>,
    problems: Vec<String>,
}

impl Show for Verified {
    fn text(&self) -> String {
        let Verified {
            records,
            seconds,
            megabytes_per_second: rate,
            ..
        } = self;
        let megabytes = self.bytes as f64 / 1_000_000.0;
        let mut out = format!(
            "records checked:      {records} ({megabytes:.1} MB in {seconds:.3} s, {rate:.0} MB/s)\n\
             checkpoints verified: {}\n\
             unsigned tail:        {} records after the last verified checkpoint\n\
             head:                 record {} {}\n",
            self.checkpoints_verified, self.unsigned_tail, self.head_seq, self.head_hash
        );
        if let Some(check) = &self.server {
            out.push_str(&format!("server:               {check}\n"));
        }
        if let Some(torn) = &self.partial_tail {
            out.push_str(&format!("note:                 {torn}\n"));
        }
        for problem in &self.problems {
            out.push_str(&format!("FAILED: {problem}\n"));
        }
        if self.problems.is_empty() {
            out.push_str("OK: the log verifies against the pinned key\n");
        }
        out
    }
}

async fn verify_command(
    ctx: &Ctx,
    dir: PathBuf,
    key_file: PathBuf,
    against_server: bool,
    max_unsigned: u64,
    format: Format,
) -> CliResult<()> {
    let key_text = std::fs::read_to_string(&key_file).map_err(|e| {
        CliError::new(format!(
            "cannot read public key {}: {e}",
            key_file.display()
        ))
    })?;
    let key = parse_public_key(&key_text).ok_or_else(|| {
        CliError::new(format!(
            "public key {}: not base64 of 32 bytes",
            key_file.display()
        ))
    })?;
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "audit directory {} does not exist",
            dir.display()
        )));
    }
    // The server's head is read first: anything written after it is simply more log.
    let server_head = if against_server {
        let head = call!(ctx, AuditClient::new, head, v1::AuditHeadRequest {}).await?;
        Some(head)
    } else {
        None
    };
    let started = Instant::now();
    let mut hash_at_server_head = None;
    let report = verify::scan(&dir, Some(&key), |record, line| {
        if server_head
            .as_ref()
            .is_some_and(|head| head.seq == record.seq)
        {
            hash_at_server_head = Some(line_hash(line));
        }
    })
    .map_err(|e| CliError::new(format!("cannot read {}: {e}", dir.display())))?;
    let seconds = started.elapsed().as_secs_f64();
    let megabytes = report.bytes as f64 / 1_000_000.0;
    let rate = if seconds > 0.0 {
        megabytes / seconds
    } else {
        0.0
    };

    let mut problems: Vec<String> = Vec::new();
    if let Some(broken) = &report.broken {
        problems.push(format!("first broken link: {broken}"));
    }
    if report.records == 0 {
        problems.push(format!("{} holds no audit records", dir.display()));
    } else if report.broken.is_none() && report.checkpoints_verified == 0 {
        problems.push("no checkpoint signed by the pinned key: nothing in the log is authenticated (unseal the vault so it signs one)".into());
    }
    if report.broken.is_none() && report.unsigned_tail > max_unsigned {
        problems.push(format!("{} records after the last verified checkpoint (more than --max-unsigned {max_unsigned}; if the vault is sealed, unseal it so a checkpoint covers them)", report.unsigned_tail));
    }
    let server_check = server_head.as_ref().map(|head| match &hash_at_server_head {
        Some(hash) if *hash == head.hash => format!("record {} matches the server's head", head.seq),
        Some(_) => {
            let message = format!("record {} differs from the server's head: the log was rewritten", head.seq);
            problems.push(message.clone());
            message
        }
        None => {
            let message = format!("the log ends at record {} but the server's head is record {}: records were removed from the tail", report.head_seq, head.seq);
            problems.push(message.clone());
            message
        }
    });
    let torn = report.torn_tail.as_ref().map(|(file, offset, length)| {
        format!("a partial record of {length} bytes at byte {offset} of {} (a crash or a write in progress; the server removes it at start)", file.display())
    });

    let verified = Verified {
        ok: problems.is_empty(),
        records: report.records,
        bytes: report.bytes,
        seconds,
        megabytes_per_second: rate,
        checkpoints_verified: report.checkpoints_verified,
        unsigned_tail: report.unsigned_tail,
        head_seq: report.head_seq,
        head_hash: report.head_hash,
        first_broken: report.broken.map(|b| Broken {
            file: b.file,
            offset: b.offset,
            reason: b.reason,
        }),
        server: server_check,
        partial_tail: torn,
        problems,
    };
    show(&verified, format)?;
    if verified.ok {
        Ok(())
    } else {
        Err(CliError::new(verified.problems.join("; ")))
    }
}
