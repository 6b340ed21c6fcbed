//! `switchyard dlq ls|show|replay|purge` on the platform's dead-letter functions.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use switchyard::dlq;

use crate::connect::StackArgs;

/// Flags of `switchyard dlq`.
#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(flatten)]
    pub stack: StackArgs,

    #[command(subcommand)]
    pub command: DlqCommand,
}

/// What to do with dead letters.
#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    Ls {
        /// List at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its payload.
    Show {
        /// Its sequence in the DLQ stream.
        seq: u64,
    },
    /// Republish dead letters to their origin subjects and remove them from the DLQ.
    Replay {
        /// Sequences to replay.
        #[arg(required_unless_present = "all")]
        seq: Vec<u64>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "seq")]
        all: bool,
    },
    /// Delete every dead letter.
    Purge {
        /// Confirm: purging cannot be undone.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs `dlq`.
pub async fn run(args: &DlqArgs) -> anyhow::Result<()> {
    if let DlqCommand::Purge { yes: false } = args.command {
        bail!("purging deletes every dead letter for good: run `switchyard dlq purge --yes`");
    }
    let client = args.stack.connect("dlq").await?;
    let js = async_nats::jetstream::new(client.clone());
    let result = match js.get_stream(switchyard::names::DLQ_STREAM).await {
        Ok(_) => run_command(&js, &args.command).await,
        Err(_) => Err(args.stack.no_stack_error()),
    };
    switchyard::nats::drain(&client, Duration::from_secs(2)).await;
    result
}

async fn run_command(js: &async_nats::jetstream::Context, command: &DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Ls { limit, json } => {
            let letters = dlq::list(js, *limit).await.context("failed to list dead letters")?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&letters)?);
                return Ok(());
            }
            println!(
                "{:>6}  {:<10} {:<12} {:>9}  {:<44} error",
                "seq", "consumer", "reason", "delivered", "origin subject"
            );
            for letter in &letters {
                println!(
                    "{:>6}  {:<10} {:<12} {:>9}  {:<44} {}",
                    letter.seq,
                    letter.consumer,
                    letter.reason,
                    letter.deliveries,
                    letter.origin_subject,
                    letter.error
                );
            }
            println!("{} dead letters", letters.len());
        }
        DlqCommand::Show { seq } => {
            let letter =
                dlq::show(js, *seq).await.with_context(|| format!("failed to show dead letter {seq}"))?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
        DlqCommand::Replay { seq, all } => {
            let seqs: Vec<u64> = if *all {
                dlq::list(js, usize::MAX)
                    .await
                    .context("failed to list dead letters")?
                    .iter()
                    .map(|l| l.seq)
                    .collect()
            } else {
                seq.clone()
            };
            for seq in seqs {
                let new_seq = dlq::replay(js, seq)
                    .await
                    .with_context(|| format!("failed to replay dead letter {seq}"))?;
                println!("replayed dead letter {seq} as ORDERS sequence {new_seq}");
            }
        }
        DlqCommand::Purge { .. } => {
            let purged = dlq::purge(js).await.context("failed to purge dead letters")?;
            println!("purged {purged} dead letters");
        }
    }
    Ok(())
}
