//! `griffin relay`: the AF_XDP relay in the foreground, on a split attached
//! with `griffin xdp attach` (or by the daemon). The relay itself is
//! [`griffin_runtime::relay`]; this is argument parsing and presentation.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use griffin_ebpf::{
    afxdp::{XdpConfig, ZeroCopy},
    split::{self, SplitPaths},
    DEFAULT_BPFFS,
};
use griffin_runtime::relay::{self, DestinationSpec, Relay, RelaySpec, RelayStats};

/// `griffin relay`'s arguments (the help text is on the command in main.rs).
#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// The interface whose split steers frames to the relay.
    #[arg(required_unless_present = "config")]
    iface: Option<String>,
    /// Where the payloads go: udp:ADDR:PORT, unix:PATH or shm:PATH.
    #[arg(long, required_unless_present = "config")]
    to: Option<String>,
    /// With udp: the network namespace to open the socket in.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Queues served, one AF_XDP socket each (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "0")]
    queues: Vec<u32>,
    /// Ids of the xsk rules feeding the relay (for the record).
    #[arg(long, value_delimiter = ',')]
    rules: Vec<u32>,
    /// The relay's name (stats file, metrics label).
    #[arg(long, default_value = "relay")]
    name: String,
    /// With shm: slots per ring (a power of two) and bytes per slot.
    #[arg(long, default_value_t = 4096)]
    slots: u32,
    /// With shm: bytes per slot (a multiple of 8; payloads up to 4 less).
    #[arg(long, default_value_t = 2048)]
    slot_size: u32,
    /// Frames taken and sent per batch.
    #[arg(long, default_value_t = 64)]
    batch: u32,
    /// Zero-copy bind: auto (fall back to copy mode), require, never.
    #[arg(long, default_value = "auto", value_parser = ["auto", "require", "never"])]
    zero_copy: String,
    /// Run the relay NAME of a daemon config's `[[relays]]` instead.
    #[arg(long, requires = "relay_name")]
    config: Option<PathBuf>,
    /// With --config: which relay.
    #[arg(long = "relay")]
    relay_name: Option<String>,
    /// Seconds between printed counters (0: only at exit).
    #[arg(long, default_value_t = 1)]
    interval: u64,
    /// Print the counters as JSON lines.
    #[arg(long)]
    json: bool,
    /// bpffs mount point.
    #[arg(long, default_value = DEFAULT_BPFFS)]
    bpffs: PathBuf,
    /// Stop after this many seconds (tests).
    #[arg(long, hide = true)]
    duration: Option<u64>,
}

/// Parses `--to`.
fn destination(
    to: &str,
    netns: Option<PathBuf>,
    slots: u32,
    slot_size: u32,
) -> anyhow::Result<DestinationSpec> {
    let (kind, rest) = to
        .split_once(':')
        .with_context(|| format!("--to {to:?}: expected udp:ADDR:PORT, unix:PATH or shm:PATH"))?;
    if netns.is_some() && kind != "udp" {
        bail!("--netns applies to udp destinations only");
    }
    Ok(match kind {
        "udp" => DestinationSpec::Udp {
            addr: rest
                .parse()
                .with_context(|| format!("--to {to:?}: not ADDR:PORT"))?,
            netns,
        },
        "unix" => DestinationSpec::Unix { path: rest.into() },
        "shm" => DestinationSpec::Shm {
            path: rest.into(),
            slots,
            slot_size,
        },
        _ => bail!("--to {to:?}: unknown kind {kind:?} (udp, unix or shm)"),
    })
}

fn spec(args: &RelayArgs) -> anyhow::Result<RelaySpec> {
    if let Some(path) = &args.config {
        let config = griffin_runtime::config::Config::load(path)?;
        let name = args.relay_name.as_deref().unwrap_or_default();
        return config
            .relays
            .into_iter()
            .find(|r| r.name == name)
            .with_context(|| format!("{}: no relay named {name:?}", path.display()));
    }
    let (Some(iface), Some(to)) = (&args.iface, &args.to) else {
        bail!("IFACE and --to are required without --config");
    };
    Ok(RelaySpec {
        name: args.name.clone(),
        iface: iface.clone(),
        queues: args.queues.clone(),
        rules: args.rules.clone(),
        destination: destination(to, args.netns.clone(), args.slots, args.slot_size)?,
        batch: args.batch.clamp(1, 4096),
    })
}

fn print(stats: &RelayStats, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(stats)?);
    } else {
        println!("{}", summary(stats));
    }
    Ok(())
}

/// One line of counters (also used by `griffin xdp stats`).
pub fn summary(s: &RelayStats) -> String {
    format!(
        "relay {}: received {}, delivered {} ({} bytes, {} sends), dropped: consumer {}, not udp {}, kernel {}",
        s.name,
        s.received,
        s.delivered,
        s.delivered_bytes,
        s.sends,
        s.dropped_consumer,
        s.dropped_not_udp,
        s.kernel_dropped
    )
}

/// Runs `griffin relay`.
pub fn run(args: RelayArgs) -> anyhow::Result<()> {
    let spec = spec(&args)?;
    let xdp = XdpConfig {
        zero_copy: match args.zero_copy.as_str() {
            "require" => ZeroCopy::Require,
            "never" => ZeroCopy::Never,
            _ => ZeroCopy::Auto,
        },
        ..XdpConfig::default()
    };
    let mut datapath = split::adopt(&SplitPaths::with_bpffs(&args.bpffs), &spec.iface)
        .with_context(|| format!("relay {}: the split on {}", spec.name, spec.iface))?;
    let relay = Relay::start(&spec, &xdp, &mut datapath)?;
    for (queue, mode) in relay.modes() {
        tracing::info!(queue, %mode, "relay: AF_XDP socket bound");
    }
    let stats_dir = Path::new(relay::STATS_DIR);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the signal runtime")?;
    let interval = Duration::from_secs(args.interval.max(1));
    let deadline = args
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let result: anyhow::Result<()> = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut tick = tokio::time::interval(interval);
        let end = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(end);
        loop {
            tokio::select! {
                _ = term.recv() => return Ok(()),
                _ = int.recv() => return Ok(()),
                () = &mut end => return Ok(()),
                _ = tick.tick() => {
                    if let Err(e) = relay.publish(stats_dir) {
                        tracing::warn!(dir = %stats_dir.display(), error = %e, "relay: publishing counters");
                    }
                    if args.interval > 0 {
                        print(&relay.stats(), args.json)?;
                    }
                    if !relay.is_running() {
                        return Ok(());
                    }
                }
            }
        }
    });
    let name = spec.name.clone();
    let stats = relay.stop();
    relay::unpublish_stats(stats_dir, &name);
    result?;
    print(&stats?, args.json)?;
    Ok(())
}
