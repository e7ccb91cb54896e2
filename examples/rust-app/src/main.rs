//! An application that gets its database credentials from the vault.
//!
//! It logs in with AppRole (the role id is configuration; the secret id is delivered to the
//! machine separately, here in a file), reads `db/primary`, and then follows changes to it. It
//! never prints the password, only a fingerprint. The token is renewed in the background by
//! the client library for as long as the application runs.
//!
//! ```sh
//! VAULT_ADDR=https://vault.internal:8200 VAULT_CACERT=ca.pem \
//! VAULT_ROLE_ID=... VAULT_SECRET_ID_FILE=/run/secrets/secret-id \
//!   vault-example-app --tenant acme --path db/primary --follow 3
//! ```

use std::process::ExitCode;

use vault_client::{Client, Credentials, Secret, Start};

struct Args {
    tenant: String,
    path: String,
    /// How many changes to follow before exiting.
    follow: u32,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        tenant: std::env::var("VAULT_TENANT").unwrap_or_default(),
        path: "db/primary".to_owned(),
        follow: 0,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let mut value = |name: &str| words.next().ok_or(format!("{name} needs a value"));
        match word.as_str() {
            "--tenant" => args.tenant = value("--tenant")?,
            "--path" => args.path = value("--path")?,
            "--follow" => {
                args.follow = value("--follow")?
                    .parse()
                    .map_err(|_| "--follow: a number of changes".to_owned())?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.tenant.is_empty() {
        return Err("--tenant (or VAULT_TENANT) is required".to_owned());
    }
    Ok(args)
}

/// AppRole from VAULT_ROLE_ID and VAULT_SECRET_ID_FILE, else the token in VAULT_TOKEN.
fn credentials(tenant: &str) -> Result<Credentials, vault_client::Error> {
    match (
        std::env::var("VAULT_ROLE_ID"),
        std::env::var_os("VAULT_SECRET_ID_FILE"),
    ) {
        (Ok(role_id), Some(file)) => {
            let secret_id =
                std::fs::read_to_string(&file).map_err(|e| vault_client::Error::Config {
                    message: format!("VAULT_SECRET_ID_FILE: {e}"),
                })?;
            Ok(Credentials::approle(tenant, role_id, secret_id.trim()))
        }
        _ => Credentials::from_env(),
    }
}

fn show(secret: &Secret) -> Result<(), vault_client::Error> {
    let user = secret.field("user")?.as_str()?;
    let password = secret.field("password")?;
    let fingerprint = ring::digest::digest(&ring::digest::SHA256, password.expose());
    println!(
        "{} version {}: user={user} password-sha256={}",
        secret.path(),
        secret.version(),
        hex::encode(&fingerprint.as_ref()[..8])
    );
    Ok(())
}

async fn app(args: Args) -> Result<(), vault_client::Error> {
    let client = Client::builder_from_env()?
        .connect(credentials(&args.tenant)?)
        .await?;
    println!("logged in as {}", client.token_status().accessor);
    // Open the watch before reading, so no change can fall in between.
    let mut watch = client.watch(&args.tenant, &args.path, Start::Now).await?;
    show(&client.get(&args.tenant, &args.path).await?)?;
    for _ in 0..args.follow {
        println!("waiting for a change");
        let event = watch.next().await?;
        println!(
            "revision {}: {:?} {}",
            event.revision, event.kind, event.path
        );
        match client.get(&args.tenant, &args.path).await {
            Ok(secret) => show(&secret)?,
            Err(vault_client::Error::NotFound { message }) => println!("gone: {message}"),
            Err(other) => return Err(other),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("vault-example-app: {message}");
            return ExitCode::from(2);
        }
    };
    match app(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vault-example-app: {error}");
            ExitCode::FAILURE
        }
    }
}
