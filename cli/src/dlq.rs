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
    /// Send dead letters back to the one consumer that failed each (and to no other), remove
    /// them from the DLQ, and report per letter what became of it. Exits 1 when any failed again
    /// or did not settle within --wait.
    Replay {
        /// Sequences to replay.
        #[arg(required_unless_present = "all")]
        seq: Vec<u64>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with = "seq")]
        all: bool,
        /// How long to wait for each replay to be applied or to fail again; 0 only sends it.
        #[arg(long, value_parser = switchyard::config::parse_duration, default_value = "10s")]
        wait: Duration,
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
    let result = match js.get_stream(contracts::names::DLQ_STREAM).await {
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
                "{:>6}  {:<10} {:<12} {:>9} {:>9}  {:<44} error",
                "seq", "consumer", "reason", "delivered", "replay of", "origin subject"
            );
            for letter in &letters {
                println!(
                    "{:>6}  {:<10} {:<12} {:>9} {:>9}  {:<44} {}",
                    letter.seq,
                    letter.consumer,
                    letter.reason,
                    letter.deliveries,
                    letter.replay_of.map(|seq| seq.to_string()).unwrap_or_else(|| "-".into()),
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
        DlqCommand::Replay { seq, all, wait } => {
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
            let (mut applied, mut failed, mut pending) = (0, 0, 0);
            for seq in &seqs {
                let replayed = dlq::replay(js, *seq)
                    .await
                    .with_context(|| format!("failed to replay dead letter {seq}"))?;
                let what = format!(
                    "dead letter {seq} ({}) replayed to consumer {} (REPLAY seq {})",
                    replayed.origin_subject, replayed.consumer, replayed.replay_seq
                );
                if wait.is_zero() {
                    println!("{what}: sent, not waited for");
                    continue;
                }
                match dlq::outcome(js, &replayed, *wait).await.context("failed to follow the replay")? {
                    dlq::Outcome::Applied => {
                        applied += 1;
                        println!("{what}: applied");
                    }
                    dlq::Outcome::FailedAgain(letter) => {
                        failed += 1;
                        println!(
                            "{what}: failed again, now dead letter {} ({}: {})",
                            letter.seq, letter.reason, letter.error
                        );
                    }
                    dlq::Outcome::Pending => {
                        pending += 1;
                        println!(
                            "{what}: not settled within {wait:?} (is the {} consumer running?)",
                            replayed.consumer
                        );
                    }
                }
            }
            if !wait.is_zero() {
                println!(
                    "{} replayed: {applied} applied, {failed} failed again, {pending} not settled",
                    seqs.len()
                );
                if failed + pending > 0 {
                    bail!("{failed} replayed dead letters failed again and {pending} did not settle");
                }
            }
        }
        DlqCommand::Purge { .. } => {
            let purged = dlq::purge(js).await.context("failed to purge dead letters")?;
            println!("purged {purged} dead letters");
        }
    }
    Ok(())
}
