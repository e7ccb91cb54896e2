//! Dev mode: initialise with one share, keep the share and root token in the data directory
//! (mode 0600), and unseal from them at every start. Insecure by design, and loud about it.

use std::{fs, io::Write, path::Path};

use vault_core::{Vault, shamir::UnsealShare};
use zeroize::Zeroizing;

const CREDENTIALS_FILE: &str = "dev-credentials.json";

pub(crate) fn bootstrap(vault: &Vault, data_dir: &Path) -> Result<(), String> {
    let file = data_dir.join(CREDENTIALS_FILE);
    let (share, token, fresh) = if vault.status().initialized {
        let text = Zeroizing::new(
            fs::read_to_string(&file).map_err(|e| format!("dev mode: cannot read {}: {e} (was this directory made by --dev?)", file.display()))?,
        );
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|_| format!("dev mode: {} is not valid JSON", file.display()))?;
        let field = |name: &str| {
            value.get(name).and_then(|v| v.as_str()).map(|s| Zeroizing::new(s.to_owned())).ok_or_else(|| format!("dev mode: {} has no {name}", file.display()))
        };
        (field("unseal_share")?, field("root_token")?, false)
    } else {
        let output = vault.init(1, 1).map_err(|e| format!("dev mode: init failed: {e}"))?;
        let share = output.shares.first().map(UnsealShare::expose_secret).ok_or("dev mode: init returned no share")?;
        let token = Zeroizing::new(output.root_token.expose_secret().to_owned());
        let json = Zeroizing::new(serde_json::json!({ "unseal_share": share.as_str(), "root_token": token.as_str() }).to_string());
        write_private(&file, json.as_bytes()).map_err(|e| format!("dev mode: cannot write {}: {e}", file.display()))?;
        (share, token, true)
    };
    let parsed = UnsealShare::parse(&share).map_err(|e| format!("dev mode: stored share: {e}"))?;
    vault.unseal(parsed).map_err(|e| format!("dev mode: unseal failed: {e}"))?;

    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "==> vault-server is running in DEV MODE: insecure, for trying the vault only.");
    let _ = writeln!(out, "    One unseal share; it and the root token are kept in {} so restarts unseal themselves.", file.display());
    if fresh {
        let _ = writeln!(out, "    Initialised a new vault.");
    }
    let _ = writeln!(out, "    Unseal share: {}", share.as_str());
    let _ = writeln!(out, "    Root token:   {}", token.as_str());
    let _ = writeln!(out, "    export VAULT_TOKEN={}", token.as_str());
    let _ = out.flush();
    Ok(())
}

/// Writes a file readable only by its owner, atomically (temp file + rename).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}
