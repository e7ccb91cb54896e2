//! Dev mode: initialise with one share, keep the share and root token in the data directory
//! (mode 0600), and unseal from them at every start. Insecure by design, and loud about it.
//! The share and token are printed once, when the vault is created.

use std::{fs, io::Write, path::Path};

use vault_core::{
    Vault, files::write_private, recipient::Handout, shamir::UnsealShare, vault::InitRecipients,
};
use zeroize::Zeroizing;

const CREDENTIALS_FILE: &str = "dev-credentials.json";

pub(crate) fn bootstrap(vault: &Vault, data_dir: &Path) -> Result<(), String> {
    let file = data_dir.join(CREDENTIALS_FILE);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "==> vault-server is running in DEV MODE: insecure, for trying the vault only."
    );
    let _ = writeln!(
        out,
        "    One unseal share; it and the root token are kept in {} so restarts unseal themselves.",
        file.display()
    );
    let share = if vault.seal().status().initialized {
        let text = Zeroizing::new(fs::read_to_string(&file).map_err(|e| {
            format!("dev mode: cannot read {}: {e} (a directory not made by --dev, or init was interrupted: start over with an empty directory)", file.display())
        })?);
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|_| format!("dev mode: {} is not valid JSON", file.display()))?;
        let share = value
            .get("unseal_share")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("dev mode: {} has no unseal_share", file.display()))?;
        let _ = writeln!(
            out,
            "    Unsealed again; the root token is in {} (if it was revoked, `vault-cli generate-root` makes a new one with the share kept there).",
            file.display()
        );
        Zeroizing::new(share.to_owned())
    } else {
        let output = vault
            .seal()
            .init(1, 1, InitRecipients::default())
            .map_err(|e| format!("dev mode: init failed: {e}"))?;
        let share = output
            .shares
            .first()
            .and_then(Handout::as_plain)
            .map(UnsealShare::expose_secret)
            .ok_or("dev mode: init returned no share")?;
        let token = output
            .root_token
            .as_plain()
            .ok_or("dev mode: init returned no root token")?
            .expose_secret();
        // Built by hand into a zeroizing buffer; both values are base64 and need no escaping.
        let mut json = Zeroizing::new(String::new());
        json.push_str("{\"unseal_share\":\"");
        json.push_str(&share);
        json.push_str("\",\"root_token\":\"");
        json.push_str(token);
        json.push_str("\"}\n");
        write_private(&file, json.as_bytes())
            .map_err(|e| format!("dev mode: cannot write {}: {e}", file.display()))?;
        let _ = writeln!(
            out,
            "    Initialised a new vault. These are shown only now:"
        );
        let _ = writeln!(out, "    Unseal share: {}", share.as_str());
        let _ = writeln!(out, "    Root token:   {token}");
        let _ = writeln!(out, "    export VAULT_TOKEN={token}");
        share
    };
    let _ = out.flush();
    let parsed = UnsealShare::parse(&share).map_err(|e| format!("dev mode: stored share: {e}"))?;
    vault
        .seal()
        .unseal(parsed)
        .map_err(|e| format!("dev mode: unseal failed: {e}"))?;
    Ok(())
}
