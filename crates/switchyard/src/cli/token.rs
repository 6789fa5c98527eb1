//! `switchyard token new|hash`: bearer tokens for the credentials of `auth.credentials`. The
//! configuration holds only a token's SHA-256; the token goes to its holder.

use std::io::Read;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use switchyard_core::access::AccessRole;
use switchyard_server::auth::sha256_hex;

use super::InputError;

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Generate a random token (256 bits) and print it, its SHA-256 and a credential entry.
    New(NewArgs),
    /// Read a token from stdin and print its SHA-256 (what token_sha256 takes).
    Hash,
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The credential's name, for the printed entry.
    #[arg(long, default_value = "NAME")]
    name: String,
    /// Its roles, comma-separated: viewer, operator, approver, feedback, inference, admin.
    #[arg(long, default_value = "viewer", value_delimiter = ',')]
    roles: Vec<String>,
}

pub fn run(args: TokenArgs) -> Result<()> {
    match args.command {
        TokenCommand::New(args) => new(args),
        TokenCommand::Hash => hash(),
    }
}

#[allow(clippy::print_stdout)]
fn new(args: NewArgs) -> Result<()> {
    for role in &args.roles {
        if AccessRole::parse(role).is_none() {
            return Err(InputError::new(
                "--roles",
                format!("'{role}' is not viewer, operator, approver, feedback, inference or admin"),
            )
            .into());
        }
    }
    let bytes: [u8; 32] = rand::random();
    let token: String = std::iter::once("sy_".to_string())
        .chain(bytes.iter().map(|b| format!("{b:02x}")))
        .collect();
    let hash = sha256_hex(&token);
    println!("token         {token}");
    println!("token_sha256  {hash}");
    println!("# Give the token to its holder (SWITCHYARD_ADMIN_TOKEN for the CLI); only the hash");
    println!("# goes into the configuration, under auth.credentials:");
    println!(
        "- {{ name: {}, roles: [{}], token_sha256: \"{hash}\" }}",
        args.name,
        args.roles.join(", ")
    );
    Ok(())
}

#[allow(clippy::print_stdout)]
fn hash() -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading the token from stdin")?;
    let token = text.trim();
    if token.is_empty() {
        return Err(InputError::new("stdin", "no token given").into());
    }
    println!("{}", sha256_hex(token));
    Ok(())
}
