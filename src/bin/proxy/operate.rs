//! The operator commands: cache stats, listing, purge and verify; the CA; warming.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context as _;
use asset_proxy::ca::CertAuthority;
use asset_proxy::cache::Purge;
use asset_proxy::commands::{self, CacheTarget};
use asset_proxy::Config;
use serde_json::{json, Value};

use crate::cli::{CaCommand, CacheCommand, Command, Options};

pub async fn operate(
    command: Command,
    config: Config,
    options: &Options,
) -> anyhow::Result<ExitCode> {
    match command {
        Command::Cache(CacheCommand::Verify { repair }) => {
            let clean = asset_proxy::commands::verify(&config.cache.dir, repair).await?;
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Cache(CacheCommand::Export {
            har,
            prefix,
            namespace,
        }) => {
            let count =
                asset_proxy::commands::export_har(&config, &prefix, namespace, &har).await?;
            println!("{count} entries written to {}", har.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache(CacheCommand::Import { file, namespace }) => {
            let report =
                asset_proxy::commands::import_har(&config, &file, namespace.as_deref()).await?;
            for (url, why) in &report.skipped {
                println!("not stored  {url}  {why}");
            }
            println!(
                "{} stored, {} not stored",
                report.stored,
                report.skipped.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache(command) => {
            let target =
                CacheTarget::find(options.admin_addr(), options.admin_token.clone(), &config)
                    .await?;
            cache_command(command, &target).await
        }
        Command::Ca(CaCommand::Path) => {
            println!(
                "{}",
                config
                    .mitm
                    .ca_dir
                    .join(asset_proxy::ca::CERT_FILE)
                    .display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca(CaCommand::Export) => {
            let provider = asset_proxy::app::install_crypto_provider();
            let ca = CertAuthority::load_or_create(&config.mitm.ca_dir, provider)?;
            print!("{}", ca.cert_pem());
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca(CaCommand::Spki) => {
            let provider = asset_proxy::app::install_crypto_provider();
            let ca = CertAuthority::load_or_create(&config.mitm.ca_dir, provider)?;
            println!("{}", ca.spki_sha256());
            Ok(ExitCode::SUCCESS)
        }
        Command::Warm { file, concurrency } => {
            let text = if file == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("cannot read {file}"))?
            };
            let urls = commands::read_urls(&text)?;
            let report = commands::warm(config, options.port, urls, concurrency).await?;
            let failures = report.failures();
            println!(
                "warmed {} of {} URLs, {} bytes in {:.1}s",
                report.outcomes.len() - failures.len(),
                report.outcomes.len(),
                report.bytes,
                report.elapsed.as_secs_f64()
            );
            for failure in &failures {
                if let Err(error) = &failure.result {
                    println!("failed: {} ({error})", failure.url);
                }
            }
            Ok(if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Config(_) => Ok(ExitCode::SUCCESS),
    }
}

async fn cache_command(command: CacheCommand, target: &CacheTarget) -> anyhow::Result<ExitCode> {
    match command {
        CacheCommand::Stats { namespace } => print_json(&target.stats(namespace.as_deref()).await?),
        CacheCommand::Ls { prefix, namespace } => {
            let listing = target
                .entries(prefix.as_deref().unwrap_or(""), namespace.as_deref())
                .await?;
            for entry in listing["entries"].as_array().into_iter().flatten() {
                let version = entry["version"]
                    .as_str()
                    .map(|v| format!("  v={v}"))
                    .unwrap_or_default();
                println!(
                    "{}  {:>10}  {}{version}",
                    entry["status"],
                    entry["body_bytes"],
                    entry["key"].as_str().unwrap_or("")
                );
            }
        }
        CacheCommand::Purge {
            url,
            prefix,
            host,
            asset,
            all,
            namespace,
        } => {
            let (what, body) = match (url, prefix, host, asset, all) {
                (Some(url), ..) => (Purge::Url(url.clone()), json!({ "url": url })),
                (_, Some(prefix), ..) => {
                    (Purge::Prefix(prefix.clone()), json!({ "prefix": prefix }))
                }
                (_, _, Some(host), ..) => (Purge::Host(host.clone()), json!({ "host": host })),
                (_, _, _, Some(asset), _) => {
                    (Purge::Asset(asset.clone()), json!({ "asset": asset }))
                }
                (.., true) => (Purge::All(true), json!({ "all": true })),
                _ => anyhow::bail!(
                    "say what to purge: URL, --prefix P, --host H, --asset A or --all"
                ),
            };
            let mut body = body;
            if let (Some(name), Some(fields)) = (&namespace, body.as_object_mut()) {
                fields.insert("namespace".to_owned(), json!(name));
            }
            let report = target.purge(&what, namespace.as_deref(), body).await?;
            println!(
                "removed {} from memory, {} from disk",
                report["memory"], report["disk"]
            );
        }
        CacheCommand::Verify { .. } | CacheCommand::Export { .. } | CacheCommand::Import { .. } => {
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}
