//! `griffin xdp`: attach the XDP classifier with a rules file, show its
//! rules and counters, detach it. Attaching and detaching are
//! [`griffin_ebpf::split`]'s; this is argument parsing and presentation.
//!
//! Rule names are not stored in the BPF maps; `attach` records them (with
//! redirect targets and prefix sets) in `/run/griffin/xdp/<iface>.json`
//! ([`split::Meta`]), and `detach` removes that file.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::Subcommand;
use griffin_ebpf::{
    split::{self, Meta, SplitPaths},
    types::{action, match_flags, GriffinRule, TARGET_RX_QUEUE},
    AttachMode, Counter, Counters, DEFAULT_BPFFS,
};
use serde::Serialize;

/// `griffin xdp ...`.
#[derive(Debug, clap::Args)]
pub struct XdpArgs {
    /// bpffs mount point (pins go to `<bpffs>/griffin/<iface>/`).
    #[arg(long, default_value = DEFAULT_BPFFS, global = true)]
    bpffs: PathBuf,
    #[command(subcommand)]
    command: XdpCommand,
}

#[derive(Debug, Subcommand)]
enum XdpCommand {
    /// Attach the classifier to IFACE with the rules of a TOML/YAML file; if
    /// Griffin is already attached there, replace its rules instead.
    Attach {
        /// Interface.
        iface: String,
        /// Rules file (`.toml`, `.yaml` or `.yml`).
        #[arg(long)]
        rules: PathBuf,
        /// Attach mode: native (driver), generic (skb), or auto (native,
        /// falling back to generic with a warning).
        #[arg(long, default_value_t = AttachMode::Auto, value_parser = attach_mode())]
        mode: AttachMode,
    },
    /// Show the active rules of IFACE in match order.
    Rules {
        /// Interface.
        iface: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Show the counters of IFACE.
    Stats {
        /// Interface.
        iface: String,
        /// JSON output (with --watch: one object per line).
        #[arg(long)]
        json: bool,
        /// Reprint every second, with per-second rates, until interrupted.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many reprints.
        #[arg(long, hide = true)]
        count: Option<u64>,
    },
    /// Detach the classifier from IFACE and remove its pins.
    Detach {
        /// Interface.
        iface: String,
    },
}

/// `--mode`: [`AttachMode`]'s own names, listed by `--help`.
fn attach_mode() -> impl clap::builder::TypedValueParser<Value = AttachMode> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(AttachMode::ALL.map(AttachMode::as_str))
        .try_map(|name| name.parse::<AttachMode>())
}

/// Runs `griffin xdp ...`.
pub fn run(args: XdpArgs) -> anyhow::Result<()> {
    match args.command {
        XdpCommand::Attach { iface, rules, mode } => attach(&args.bpffs, &iface, &rules, mode),
        XdpCommand::Rules { iface, json } => show_rules(&args.bpffs, &iface, json),
        XdpCommand::Stats {
            iface,
            json,
            watch,
            count,
        } => stats(&args.bpffs, &iface, json, watch, count),
        XdpCommand::Detach { iface } => detach(&args.bpffs, &iface),
    }
}

fn attach(bpffs: &Path, iface: &str, rules_path: &Path, mode: AttachMode) -> anyhow::Result<()> {
    let attached = split::attach(&SplitPaths::with_bpffs(bpffs), iface, rules_path, mode)?;
    warn(iface, &attached.warnings);
    println!("{attached}");
    Ok(())
}

/// Logs what the split reported.
fn warn(iface: &str, warnings: &[split::Warning]) {
    for w in warnings {
        tracing::warn!(iface, "{w}");
    }
}

#[derive(Debug, Serialize)]
struct RuleView {
    id: u32,
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    vlan: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst_ports: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    src: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dst: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dscp: Option<u8>,
    action: String,
}

fn set_view(meta: &Meta, set: u8) -> Vec<String> {
    meta.sets
        .get(usize::from(set))
        .cloned()
        .unwrap_or_else(|| vec![format!("set {set}")])
}

fn rule_view(rule: &GriffinRule, meta: &Meta) -> RuleView {
    let has = |flag| rule.match_flags & flag != 0;
    let action = match rule.action {
        action::PASS => "pass".to_owned(),
        action::DROP => "drop".to_owned(),
        action::REDIRECT => match meta.redirect.get(&rule.target) {
            Some(iface) => format!("redirect to {iface}"),
            None => format!("redirect to slot {}", rule.target),
        },
        action::XSK if rule.target == TARGET_RX_QUEUE => "xsk (rx queue)".to_owned(),
        action::XSK => format!("xsk queue {}", rule.target),
        action::CPU => format!("cpu {}", rule.target),
        other => format!("unknown action {other}"),
    };
    RuleView {
        id: rule.id,
        name: meta.names.get(rule.id as usize).cloned(),
        vlan: has(match_flags::VLAN).then_some(rule.vlan),
        protocol: has(match_flags::PROTO).then_some(rule.ip_proto),
        dst_ports: has(match_flags::DPORT).then(|| {
            if rule.dport_lo == rule.dport_hi {
                rule.dport_lo.to_string()
            } else {
                format!("{}-{}", rule.dport_lo, rule.dport_hi)
            }
        }),
        src: has(match_flags::SRC).then(|| set_view(meta, rule.src_set)),
        dst: has(match_flags::DST).then(|| set_view(meta, rule.dst_set)),
        dscp: has(match_flags::DSCP).then_some(rule.dscp),
        action,
    }
}

fn protocol_name(proto: u8) -> String {
    match proto {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        1 => "icmp".to_owned(),
        58 => "icmpv6".to_owned(),
        other => other.to_string(),
    }
}

fn show_rules(bpffs: &Path, iface: &str, json: bool) -> anyhow::Result<()> {
    let paths = SplitPaths::with_bpffs(bpffs);
    let dp = split::adopt(&paths, iface)?;
    let meta = split::read_meta(&paths, iface);
    let views: Vec<RuleView> = dp
        .active_rules()
        .context("reading the active rules")?
        .iter()
        .map(|r| rule_view(r, &meta))
        .collect();
    let mut out = crate::stdout();
    if json {
        serde_json::to_writer_pretty(&mut out, &views)?;
        writeln!(out)?;
        return Ok(());
    }
    if views.is_empty() {
        writeln!(out, "no rules on {iface}: every frame passes")?;
        return Ok(());
    }
    writeln!(out, "{:>4}  {:<20}  {:<40}  ACTION", "ID", "NAME", "MATCH")?;
    for v in &views {
        let mut matches = Vec::new();
        if let Some(vlan) = v.vlan {
            matches.push(format!("vlan {vlan}"));
        }
        if let Some(p) = v.protocol {
            matches.push(protocol_name(p));
        }
        if let Some(ports) = &v.dst_ports {
            matches.push(format!("dport {ports}"));
        }
        if let Some(src) = &v.src {
            matches.push(format!("src {}", src.join(",")));
        }
        if let Some(dst) = &v.dst {
            matches.push(format!("dst {}", dst.join(",")));
        }
        if let Some(dscp) = v.dscp {
            matches.push(format!("dscp {dscp}"));
        }
        let matches = if matches.is_empty() {
            "any".to_owned()
        } else {
            matches.join(" ")
        };
        writeln!(
            out,
            "{:>4}  {:<20}  {:<40}  {}",
            v.id,
            v.name.as_deref().unwrap_or("-"),
            matches,
            v.action
        )?;
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct CounterView {
    packets: u64,
    bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pps: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bps: Option<f64>,
}

#[derive(Debug, Serialize)]
struct RuleCounterView {
    id: u32,
    name: Option<String>,
    #[serde(flatten)]
    counter: CounterView,
}

#[derive(Debug, Serialize)]
struct ActionsView {
    pass: CounterView,
    drop: CounterView,
    redirect: CounterView,
    xsk: CounterView,
    cpu: CounterView,
}

impl ActionsView {
    fn list(&self) -> [(&'static str, &CounterView); 5] {
        [
            ("pass", &self.pass),
            ("drop", &self.drop),
            ("redirect", &self.redirect),
            ("xsk", &self.xsk),
            ("cpu", &self.cpu),
        ]
    }
}

#[derive(Debug, Serialize)]
struct StatsView {
    iface: String,
    rules: Vec<RuleCounterView>,
    actions: ActionsView,
    parse_failures: CounterView,
    fallbacks: CounterView,
    no_match: CounterView,
    /// Relays on this interface that published their counters
    /// (`griffin relay`, the daemon's `[[relays]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    relays: Vec<griffin_runtime::relay::RelayStats>,
}

fn counter_view(now: Counter, before: Option<Counter>, secs: f64) -> CounterView {
    let rate = |n: u64, b: u64| (n.saturating_sub(b)) as f64 / secs;
    CounterView {
        packets: now.packets,
        bytes: now.bytes,
        pps: before.map(|b| rate(now.packets, b.packets)),
        bps: before.map(|b| rate(now.bytes, b.bytes) * 8.0),
    }
}

fn stats_view(
    iface: &str,
    meta: &Meta,
    now: &Counters,
    before: Option<&Counters>,
    secs: f64,
) -> StatsView {
    let secs = secs.max(1e-3);
    let action = |pick: fn(&Counters) -> Counter| counter_view(pick(now), before.map(pick), secs);
    StatsView {
        iface: iface.to_owned(),
        rules: now
            .rules
            .iter()
            .map(|(&id, &c)| RuleCounterView {
                id,
                name: meta.names.get(id as usize).cloned(),
                counter: counter_view(
                    c,
                    before.map(|b| b.rules.get(&id).copied().unwrap_or_default()),
                    secs,
                ),
            })
            .collect(),
        actions: ActionsView {
            pass: action(|c| c.actions.pass),
            drop: action(|c| c.actions.drop),
            redirect: action(|c| c.actions.redirect),
            xsk: action(|c| c.actions.xsk),
            cpu: action(|c| c.actions.cpu),
        },
        parse_failures: counter_view(now.parse_failures, before.map(|b| b.parse_failures), secs),
        fallbacks: counter_view(now.fallbacks, before.map(|b| b.fallbacks), secs),
        no_match: counter_view(now.no_match, before.map(|b| b.no_match), secs),
        relays: griffin_runtime::relay::published_stats(
            Path::new(griffin_runtime::relay::STATS_DIR),
            iface,
        ),
    }
}

fn print_stats(
    out: &mut impl Write,
    view: &StatsView,
    json: bool,
    pretty: bool,
) -> anyhow::Result<()> {
    if json {
        if pretty {
            serde_json::to_writer_pretty(&mut *out, view)?;
        } else {
            serde_json::to_writer(&mut *out, view)?;
        }
        writeln!(out)?;
        return Ok(());
    }
    let line = |out: &mut dyn Write, label: &str, c: &CounterView| -> std::io::Result<()> {
        write!(
            out,
            "  {label:<28} {:>14} pkts {:>16} bytes",
            c.packets, c.bytes
        )?;
        if let (Some(pps), Some(bps)) = (c.pps, c.bps) {
            write!(out, "  {pps:>12.0} pps {:>12}", human_bps(bps))?;
        }
        writeln!(out)
    };
    writeln!(out, "{}:", view.iface)?;
    writeln!(out, " rules")?;
    if view.rules.is_empty() {
        writeln!(out, "  (none)")?;
    }
    for r in &view.rules {
        let label = format!("#{} {}", r.id, r.name.as_deref().unwrap_or("-"));
        line(out, &label, &r.counter)?;
    }
    writeln!(out, " actions")?;
    for (name, c) in view.actions.list() {
        line(out, name, c)?;
    }
    writeln!(out, " other")?;
    line(out, "no match", &view.no_match)?;
    line(out, "parse failures", &view.parse_failures)?;
    line(out, "redirect fallbacks", &view.fallbacks)?;
    if !view.relays.is_empty() {
        writeln!(out, " relays")?;
        for r in &view.relays {
            writeln!(out, "  {}", crate::relay_cli::summary(r))?;
        }
    }
    out.flush()?;
    Ok(())
}

fn human_bps(bps: f64) -> String {
    const UNITS: [&str; 5] = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    let mut value = bps;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn stats(
    bpffs: &Path,
    iface: &str,
    json: bool,
    watch: bool,
    count: Option<u64>,
) -> anyhow::Result<()> {
    let paths = SplitPaths::with_bpffs(bpffs);
    let dp = split::adopt(&paths, iface)?;
    let meta = split::read_meta(&paths, iface);
    let mut out = crate::stdout();
    let mut now = dp.counters().context("reading counters")?;
    let mut at = Instant::now();
    if !watch {
        return print_stats(
            &mut out,
            &stats_view(iface, &meta, &now, None, 1.0),
            json,
            true,
        );
    }
    if count == Some(0) {
        bail!("--count must be at least 1");
    }
    print_stats(
        &mut out,
        &stats_view(iface, &meta, &now, None, 1.0),
        json,
        false,
    )?;
    let mut printed = 1;
    while count.is_none_or(|c| printed < c) {
        std::thread::sleep(Duration::from_secs(1));
        let next = dp.counters().context("reading counters")?;
        let next_at = Instant::now();
        let secs = next_at.duration_since(at).as_secs_f64();
        if !json {
            writeln!(out)?;
        }
        print_stats(
            &mut out,
            &stats_view(iface, &meta, &next, Some(&now), secs),
            json,
            false,
        )?;
        (now, at) = (next, next_at);
        printed += 1;
    }
    Ok(())
}

fn detach(bpffs: &Path, iface: &str) -> anyhow::Result<()> {
    let warnings = split::detach(&SplitPaths::with_bpffs(bpffs), iface)?;
    warn(iface, &warnings);
    println!("detached from {iface}");
    Ok(())
}
