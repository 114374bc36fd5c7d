//! Declared SR-IOV state, reconciled: VF counts per PF and per-VF MAC,
//! VLAN/QoS, trust and spoof checking, from the daemon config's `[[sriov]]`
//! or `griffin sriov apply`.
//!
//! Reconcile reads what is, changes only what differs, and is safe to run
//! again after a crash at any point (every step is idempotent: a VF count
//! is written only when it differs, a VF setting only when the driver
//! reports another value). No node drain: a PF whose VF count must change
//! while a pod holds one of its VFs is left alone and reported, and a VF
//! setting never recreates VFs. The kernel is reached through [`VfOps`],
//! so the reconcile logic is tested against [`FakeVfs`]; [`Kernel`] is
//! sysfs plus rtnetlink ([`crate::sriov`]).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use griffin_devices::PciAddress;
use serde::{Deserialize, Serialize};

use crate::sriov::{self, SriovError, VfConfig, VfState};

/// One PF's declared state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PfSpec {
    /// The PF: its netdev name (`eth1`) or PCI address (`0000:03:00.0`).
    pub pf: String,
    /// VFs to have.
    pub num_vfs: u32,
    /// Settings of some VFs.
    #[serde(default)]
    pub vfs: Vec<VfSpec>,
}

/// Settings of one VF or a range of VFs; a setting left out is not
/// touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VfSpec {
    /// VF indices: `3`, `0-3` or `0,2-5`.
    pub index: String,
    /// MAC address (one VF only: two VFs never share one).
    #[serde(default)]
    pub mac: Option<String>,
    /// VLAN id (0 clears the VLAN).
    #[serde(default)]
    pub vlan: Option<u16>,
    /// 802.1p priority with the VLAN (default 0).
    #[serde(default)]
    pub qos: Option<u8>,
    /// Trusted (may change its MAC, enter promiscuous mode).
    #[serde(default)]
    pub trust: Option<bool>,
    /// Spoof checking.
    #[serde(default)]
    pub spoof_check: Option<bool>,
}

/// A PF's declared state, checked: VF index to its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfPlan {
    /// As written in the config.
    pub pf: String,
    /// VFs to have.
    pub num_vfs: u32,
    /// Settings per VF index.
    pub vfs: BTreeMap<u32, VfConfig>,
}

/// Largest VF count (`TotalVFs` is a 16-bit field).
const MAX_VFS: u32 = u16::MAX as u32;

/// Parses `0`, `0-3`, `0,2-5` (pure).
pub fn parse_indices(s: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let num = |t: &str| {
            t.trim()
                .parse::<u32>()
                .ok()
                .filter(|&n| n < MAX_VFS)
                .ok_or_else(|| format!("{part:?} is not a VF index or range"))
        };
        let (a, b) = (num(a)?, num(b)?);
        if a > b {
            return Err(format!("{part:?} is a descending range"));
        }
        out.extend(a..=b);
    }
    Ok(out)
}

/// Checks declared state (pure); errors name the key (`sriov[0].vfs[1].mac`).
pub fn plan(specs: &[PfSpec]) -> Result<Vec<PfPlan>, String> {
    let mut seen = BTreeMap::new();
    let mut out = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let key = format!("sriov[{i}]");
        if s.pf.is_empty() {
            return Err(format!("{key}.pf: empty"));
        }
        if let Some(j) = seen.insert(s.pf.clone(), i) {
            return Err(format!("{key}.pf: {} is also sriov[{j}]", s.pf));
        }
        if s.num_vfs > MAX_VFS {
            return Err(format!("{key}.num_vfs: {} is above {MAX_VFS}", s.num_vfs));
        }
        let mut vfs = BTreeMap::new();
        for (k, v) in s.vfs.iter().enumerate() {
            let key = format!("{key}.vfs[{k}]");
            let idx = parse_indices(&v.index).map_err(|e| format!("{key}.index: {e}"))?;
            let cfg = VfConfig {
                mac: match &v.mac {
                    None => None,
                    Some(_) if idx.len() != 1 => {
                        return Err(format!("{key}.mac: one MAC for {} VFs", idx.len()))
                    }
                    Some(m) => Some(
                        sriov::parse_mac(m)
                            .ok_or_else(|| format!("{key}.mac: {m:?} is not a MAC address"))?,
                    ),
                },
                vlan: match (v.vlan, v.qos) {
                    (Some(vl), _) if vl > 4095 => {
                        return Err(format!("{key}.vlan: {vl} is above 4095"))
                    }
                    (_, Some(q)) if q > 7 => return Err(format!("{key}.qos: {q} is above 7")),
                    (None, Some(_)) => return Err(format!("{key}.qos: needs a vlan")),
                    (Some(vl), q) => Some((vl, q.unwrap_or(0))),
                    (None, None) => None,
                },
                trust: v.trust,
                spoof_check: v.spoof_check,
            };
            for n in idx {
                if n >= s.num_vfs {
                    return Err(format!(
                        "{key}.index: VF {n} does not exist with num_vfs = {}",
                        s.num_vfs
                    ));
                }
                if vfs.insert(n, cfg.clone()).is_some() {
                    return Err(format!("{key}.index: VF {n} is set twice"));
                }
            }
        }
        out.push(PfPlan {
            pf: s.pf.clone(),
            num_vfs: s.num_vfs,
            vfs,
        });
    }
    Ok(out)
}

/// The privileged calls reconcile makes.
pub trait VfOps {
    /// The PF's PCI address and netdev, from a netdev name or an address.
    fn resolve(&self, pf: &str) -> Result<(PciAddress, String), SriovError>;
    /// Current VFs of the PF (their addresses, in VF index order).
    fn vfs(&self, pf: PciAddress) -> Result<Vec<PciAddress>, SriovError>;
    /// Sets the VF count (through 0 when both are non-zero).
    fn set_num_vfs(&self, pf: PciAddress, n: u32) -> Result<Vec<PciAddress>, SriovError>;
    /// VF settings as the PF driver reports them.
    fn vf_states(&self, iface: &str) -> Result<Vec<VfState>, SriovError>;
    /// Changes settings of one VF.
    fn configure_vf(&self, iface: &str, vf: u32, cfg: &VfConfig) -> Result<(), SriovError>;
}

/// What reconcile did for one PF.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PfOutcome {
    /// As written in the config.
    pub pf: String,
    /// Its PCI address, when resolved.
    pub pci_address: Option<PciAddress>,
    /// VF count before and after, when it was changed.
    pub num_vfs_changed: Option<(u32, u32)>,
    /// VFs whose settings were changed.
    pub configured: Vec<u32>,
    /// Why the PF is not (entirely) as declared.
    pub error: Option<String>,
}

/// Brings every PF to its plan; `held` tells whether a pod holds a VF (its
/// PF's count is then not changed). One PF's failure does not stop the
/// others; `dry_run` reports what would change without changing it.
pub fn reconcile(
    ops: &dyn VfOps,
    plans: &[PfPlan],
    held: &dyn Fn(PciAddress) -> bool,
    dry_run: bool,
) -> Vec<PfOutcome> {
    plans
        .iter()
        .map(|p| {
            let mut out = PfOutcome {
                pf: p.pf.clone(),
                pci_address: None,
                num_vfs_changed: None,
                configured: Vec::new(),
                error: None,
            };
            if let Err(e) = reconcile_pf(ops, p, held, dry_run, &mut out) {
                tracing::warn!(pf = %p.pf, error = %e, "SR-IOV reconcile incomplete");
                out.error = Some(e);
            }
            out
        })
        .collect()
}

fn reconcile_pf(
    ops: &dyn VfOps,
    p: &PfPlan,
    held: &dyn Fn(PciAddress) -> bool,
    dry_run: bool,
    out: &mut PfOutcome,
) -> Result<(), String> {
    let chain = |e: SriovError| griffin_devices::Chain(&e).to_string();
    let (addr, iface) = ops.resolve(&p.pf).map_err(chain)?;
    out.pci_address = Some(addr);
    let vfs = ops.vfs(addr).map_err(chain)?;
    let have = vfs.len() as u32;
    if have != p.num_vfs {
        let busy: Vec<String> = vfs
            .iter()
            .filter(|v| held(**v))
            .map(ToString::to_string)
            .collect();
        if !busy.is_empty() {
            return Err(format!(
                "{} VFs wanted, {have} present, and pods hold {}: the count is changed once they are released",
                p.num_vfs,
                busy.join(", ")
            ));
        }
        out.num_vfs_changed = Some((have, p.num_vfs));
        if dry_run {
            // Settings of VFs that do not exist yet cannot be compared.
            out.configured = p.vfs.keys().copied().collect();
            return Ok(());
        }
        ops.set_num_vfs(addr, p.num_vfs).map_err(chain)?;
    }
    if p.vfs.is_empty() {
        return Ok(());
    }
    let states = ops.vf_states(&iface).map_err(chain)?;
    for (&vf, want) in &p.vfs {
        let now = states.iter().find(|s| s.vf == vf);
        let delta = difference(want, now);
        if delta == VfConfig::default() {
            continue;
        }
        out.configured.push(vf);
        if !dry_run {
            ops.configure_vf(&iface, vf, &delta).map_err(chain)?;
        }
    }
    Ok(())
}

/// The settings of `want` that `now` does not already have.
fn difference(want: &VfConfig, now: Option<&VfState>) -> VfConfig {
    let Some(now) = now else {
        return want.clone();
    };
    VfConfig {
        mac: want.mac.filter(|m| *m != now.mac),
        vlan: want.vlan.filter(|v| *v != now.vlan),
        trust: want.trust.filter(|t| now.trust != Some(*t)),
        spoof_check: want.spoof_check.filter(|s| now.spoof_check != Some(*s)),
    }
}

/// The real node: sysfs under `sys` (normally `/sys`) and rtnetlink.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The sysfs root.
    pub sys: PathBuf,
}

impl Kernel {
    fn pci_dir(&self, pf: PciAddress) -> PathBuf {
        self.sys.join("bus/pci/devices").join(pf.to_string())
    }
}

fn not_found(what: String) -> SriovError {
    SriovError::NotFound(what)
}

impl VfOps for Kernel {
    fn resolve(&self, pf: &str) -> Result<(PciAddress, String), SriovError> {
        // `class/net/<iface>` links to `…/<pci address>/net/<iface>`.
        let dir = self.sys.join("class/net");
        let entries = fs::read_dir(&dir)
            .map_err(griffin_devices::IoAt::on::<SriovError>("read", dir.clone()))?;
        let mut found: Vec<(PciAddress, String)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let iface = e.file_name().into_string().ok()?;
                let target = fs::read_link(e.path()).ok()?;
                let net = target
                    .parent()
                    .filter(|p| p.file_name() == Some("net".as_ref()))?;
                let addr: PciAddress = net.parent()?.file_name()?.to_str()?.parse().ok()?;
                (iface == pf || addr.to_string() == pf).then_some((addr, iface))
            })
            .collect();
        found.sort();
        found
            .into_iter()
            .next()
            .ok_or_else(|| not_found(format!("{pf} (no netdev of a PCI function)")))
    }

    fn vfs(&self, pf: PciAddress) -> Result<Vec<PciAddress>, SriovError> {
        let dev = self.pci_dir(pf);
        let num = dev.join("sriov_numvfs");
        let n: u32 = fs::read_to_string(&num)
            .map_err(griffin_devices::IoAt::on::<SriovError>("read", num.clone()))?
            .trim()
            .parse()
            .unwrap_or(0);
        Ok((0..n)
            .filter_map(|i| fs::read_link(dev.join(format!("virtfn{i}"))).ok())
            .filter_map(|t| t.file_name()?.to_str()?.parse().ok())
            .collect())
    }

    fn set_num_vfs(&self, pf: PciAddress, n: u32) -> Result<Vec<PciAddress>, SriovError> {
        sriov::set_num_vfs(&self.sys, pf, n)
    }

    fn vf_states(&self, iface: &str) -> Result<Vec<VfState>, SriovError> {
        sriov::vf_states(&self.sys, iface)
    }

    fn configure_vf(&self, iface: &str, vf: u32, cfg: &VfConfig) -> Result<(), SriovError> {
        sriov::configure_vf(&self.sys, iface, vf, cfg)
    }
}

/// An in-memory PF driver for reconcile tests: PFs with VF counts and VF
/// settings, a call log, and a failure injected at the n-th change.
#[derive(Debug, Default)]
pub struct FakeVfs {
    inner: std::sync::Mutex<FakeInner>,
}

#[derive(Debug, Default)]
struct FakeInner {
    pfs: BTreeMap<String, (PciAddress, Vec<VfState>)>,
    changes: u32,
    fail_at: Option<u32>,
    log: Vec<String>,
}

impl FakeVfs {
    /// Adds a PF `iface` at `addr` with `n` VFs in their default state.
    pub fn with_pf(self, iface: &str, addr: &str, n: u32) -> Self {
        let addr: PciAddress = addr.parse().expect("fake PF address");
        self.lock().pfs.insert(iface.to_owned(), (addr, fresh(n)));
        self
    }

    /// Makes the `n`-th change from now fail (a crash at that point).
    pub fn fail_at_change(&self, n: u32) {
        let mut g = self.lock();
        g.fail_at = Some(g.changes + n);
    }

    /// The changes made, in order (`numvfs eth1 4`, `vf eth1 2 …`).
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    /// The VF states of `iface`.
    pub fn states(&self, iface: &str) -> Vec<VfState> {
        self.lock().pfs[iface].1.clone()
    }

    /// VF `i` of the PF at `addr` (`bus` + 1, function `i`).
    pub fn vf_address(pf: PciAddress, i: u32) -> PciAddress {
        format!("{:04x}:{:02x}:00.{}", pf.domain, pf.bus + 1, i % 8)
            .parse()
            .expect("fake VF address")
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn change(&self, what: String) -> Result<std::sync::MutexGuard<'_, FakeInner>, SriovError> {
        let mut g = self.lock();
        g.changes += 1;
        if g.fail_at == Some(g.changes) {
            return Err(SriovError::Netlink {
                op: "fake",
                iface: what,
                source: std::io::ErrorKind::Interrupted.into(),
            });
        }
        g.log.push(what);
        Ok(g)
    }
}

fn fresh(n: u32) -> Vec<VfState> {
    (0..n)
        .map(|vf| VfState {
            vf,
            mac: [0; 6],
            vlan: (0, 0),
            trust: Some(false),
            spoof_check: Some(true),
        })
        .collect()
}

impl VfOps for FakeVfs {
    fn resolve(&self, pf: &str) -> Result<(PciAddress, String), SriovError> {
        let g = self.lock();
        g.pfs
            .iter()
            .find(|(i, (a, _))| *i == pf || a.to_string() == pf)
            .map(|(i, (a, _))| (*a, i.clone()))
            .ok_or_else(|| not_found(pf.to_owned()))
    }

    fn vfs(&self, pf: PciAddress) -> Result<Vec<PciAddress>, SriovError> {
        let g = self.lock();
        let (_, (_, vfs)) = g
            .pfs
            .iter()
            .find(|(_, (a, _))| *a == pf)
            .ok_or_else(|| not_found(pf.to_string()))?;
        Ok((0..vfs.len() as u32)
            .map(|i| Self::vf_address(pf, i))
            .collect())
    }

    fn set_num_vfs(&self, pf: PciAddress, n: u32) -> Result<Vec<PciAddress>, SriovError> {
        let iface = self.resolve(&pf.to_string())?.1;
        let mut g = self.change(format!("numvfs {iface} {n}"))?;
        if let Some((_, vfs)) = g.pfs.get_mut(&iface) {
            *vfs = fresh(n);
        }
        drop(g);
        self.vfs(pf)
    }

    fn vf_states(&self, iface: &str) -> Result<Vec<VfState>, SriovError> {
        Ok(self.states(iface))
    }

    fn configure_vf(&self, iface: &str, vf: u32, cfg: &VfConfig) -> Result<(), SriovError> {
        let mut g = self.change(format!("vf {iface} {vf} {cfg:?}"))?;
        let s = g
            .pfs
            .get_mut(iface)
            .and_then(|(_, v)| v.iter_mut().find(|s| s.vf == vf))
            .ok_or_else(|| not_found(format!("{iface} vf {vf}")))?;
        if let Some(m) = cfg.mac {
            s.mac = m;
        }
        if let Some(v) = cfg.vlan {
            s.vlan = v;
        }
        if let Some(t) = cfg.trust {
            s.trust = Some(t);
        }
        if let Some(sc) = cfg.spoof_check {
            s.spoof_check = Some(sc);
        }
        Ok(())
    }
}

/// Reads `[[sriov]]`-shaped specs from a file (TOML or YAML by extension,
/// `sriov = [...]` at the top level): what `griffin sriov apply` takes.
pub fn load(path: &Path) -> Result<Vec<PfSpec>, String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        sriov: Vec<PfSpec>,
    }
    let format = griffin_ebpf::format::Format::from_path(path).map_err(|e| e.to_string())?;
    let text = griffin_ebpf::format::read_regular(path, crate::config::MAX_FILE_BYTES)
        .map_err(|e| format!("{}: {}", path.display(), griffin_devices::Chain(&e)))?;
    let f: File = griffin_ebpf::format::parse(&text, format)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(f.sriov)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(pf: &str, n: u32, vfs: &[(&str, VfSpec)]) -> PfSpec {
        PfSpec {
            pf: pf.into(),
            num_vfs: n,
            vfs: vfs
                .iter()
                .map(|(i, v)| VfSpec {
                    index: (*i).into(),
                    ..v.clone()
                })
                .collect(),
        }
    }

    fn vf() -> VfSpec {
        VfSpec {
            index: String::new(),
            mac: None,
            vlan: None,
            qos: None,
            trust: None,
            spoof_check: None,
        }
    }

    #[test]
    fn indices_and_plan_errors_name_the_key() {
        assert_eq!(parse_indices("0,2-4").unwrap(), [0, 2, 3, 4]);
        assert_eq!(parse_indices(" 7 ").unwrap(), [7]);
        for bad in ["", "a", "3-1", "1-", "-1", "70000"] {
            assert!(parse_indices(bad).is_err(), "{bad}");
        }
        let cases = [
            (spec("", 1, &[]), "sriov[0].pf: empty"),
            (spec("eth1", 70000, &[]), "sriov[0].num_vfs"),
            (
                spec(
                    "eth1",
                    4,
                    &[(
                        "0-1",
                        VfSpec {
                            mac: Some("02:00:00:00:00:01".into()),
                            ..vf()
                        },
                    )],
                ),
                "sriov[0].vfs[0].mac: one MAC for 2 VFs",
            ),
            (
                spec(
                    "eth1",
                    4,
                    &[(
                        "0",
                        VfSpec {
                            mac: Some("02:00".into()),
                            ..vf()
                        },
                    )],
                ),
                "sriov[0].vfs[0].mac",
            ),
            (
                spec(
                    "eth1",
                    4,
                    &[(
                        "0",
                        VfSpec {
                            vlan: Some(4096),
                            ..vf()
                        },
                    )],
                ),
                "vlan: 4096",
            ),
            (
                spec(
                    "eth1",
                    4,
                    &[(
                        "0",
                        VfSpec {
                            qos: Some(1),
                            ..vf()
                        },
                    )],
                ),
                "qos: needs a vlan",
            ),
            (
                spec(
                    "eth1",
                    4,
                    &[(
                        "0",
                        VfSpec {
                            vlan: Some(5),
                            qos: Some(8),
                            ..vf()
                        },
                    )],
                ),
                "qos: 8",
            ),
            (spec("eth1", 4, &[("3-4", vf())]), "VF 4 does not exist"),
            (
                spec("eth1", 4, &[("0-2", vf()), ("2", vf())]),
                "sriov[0].vfs[1].index: VF 2 is set twice",
            ),
        ];
        for (s, needle) in cases {
            let e = plan(&[s]).unwrap_err();
            assert!(e.contains(needle), "{e} / {needle}");
        }
        let e = plan(&[spec("eth1", 1, &[]), spec("eth1", 2, &[])]).unwrap_err();
        assert!(e.contains("sriov[1].pf: eth1 is also sriov[0]"), "{e}");
    }

    fn declared() -> Vec<PfPlan> {
        plan(&[
            spec(
                "eth1",
                4,
                &[
                    (
                        "0",
                        VfSpec {
                            mac: Some("02:47:00:00:00:01".into()),
                            vlan: Some(100),
                            qos: Some(3),
                            ..vf()
                        },
                    ),
                    (
                        "1-3",
                        VfSpec {
                            trust: Some(true),
                            spoof_check: Some(false),
                            ..vf()
                        },
                    ),
                ],
            ),
            spec("0000:05:00.0", 2, &[]),
        ])
        .unwrap()
    }

    fn fake() -> FakeVfs {
        FakeVfs::default()
            .with_pf("eth1", "0000:03:00.0", 0)
            .with_pf("eth2", "0000:05:00.0", 2)
    }

    #[test]
    fn reconcile_changes_only_what_differs_and_is_idempotent() {
        let f = fake();
        let out = reconcile(&f, &declared(), &|_| false, false);
        assert_eq!(out[0].num_vfs_changed, Some((0, 4)));
        assert_eq!(out[0].configured, [0, 1, 2, 3]);
        assert_eq!(out[1].num_vfs_changed, None, "eth2 already has 2");
        assert!(out.iter().all(|o| o.error.is_none()), "{out:?}");
        let s = f.states("eth1");
        assert_eq!(s[0].mac, [2, 0x47, 0, 0, 0, 1]);
        assert_eq!(s[0].vlan, (100, 3));
        assert_eq!((s[2].trust, s[2].spoof_check), (Some(true), Some(false)));
        let changes = f.log().len();
        let again = reconcile(&f, &declared(), &|_| false, false);
        assert!(
            again
                .iter()
                .all(|o| o.num_vfs_changed.is_none() && o.configured.is_empty()),
            "{again:?}"
        );
        assert_eq!(f.log().len(), changes, "nothing to do the second time");
        // A setting changed behind Griffin's back is put back, alone.
        f.configure_vf(
            "eth1",
            2,
            &VfConfig {
                trust: Some(false),
                ..Default::default()
            },
        )
        .unwrap();
        let fix = reconcile(&f, &declared(), &|_| false, false);
        assert_eq!(fix[0].configured, [2]);
    }

    #[test]
    fn a_crash_at_any_change_converges_on_the_next_run() {
        let total = {
            let f = fake();
            reconcile(&f, &declared(), &|_| false, false);
            f.log().len() as u32
        };
        assert!(total >= 5);
        for crash_at in 1..=total {
            let f = fake();
            f.fail_at_change(crash_at);
            let first = reconcile(&f, &declared(), &|_| false, false);
            assert!(first.iter().any(|o| o.error.is_some()), "crash {crash_at}");
            let second = reconcile(&f, &declared(), &|_| false, false);
            assert!(
                second.iter().all(|o| o.error.is_none()),
                "crash {crash_at}: {second:?}"
            );
            let third = reconcile(&f, &declared(), &|_| false, false);
            assert!(
                third
                    .iter()
                    .all(|o| o.num_vfs_changed.is_none() && o.configured.is_empty()),
                "crash {crash_at}: not converged: {third:?}"
            );
        }
    }

    #[test]
    fn held_vfs_keep_their_pf_count_and_dry_run_changes_nothing() {
        let f = FakeVfs::default().with_pf("eth1", "0000:03:00.0", 2);
        let held = FakeVfs::vf_address("0000:03:00.0".parse().unwrap(), 1);
        let out = reconcile(&f, &declared()[..1], &|a| a == held, false);
        let e = out[0].error.as_deref().unwrap();
        assert!(
            e.contains("pods hold") && e.contains(&held.to_string()),
            "{e}"
        );
        assert!(f.log().is_empty(), "no drain: nothing recreated");
        let dry = reconcile(&f, &declared()[..1], &|_| false, true);
        assert_eq!(dry[0].num_vfs_changed, Some((2, 4)));
        assert!(f.log().is_empty(), "dry run");
        let e = reconcile(
            &f,
            &plan(&[spec("eth9", 1, &[])]).unwrap(),
            &|_| false,
            false,
        );
        assert!(e[0].error.as_deref().unwrap().contains("eth9"), "{e:?}");
    }

    #[test]
    fn kernel_resolves_pfs_through_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path();
        let dev = sys.join("devices/pci0000:00/0000:03:00.0");
        fs::create_dir_all(dev.join("net/eth1")).unwrap();
        fs::create_dir_all(sys.join("bus/pci/devices")).unwrap();
        fs::create_dir_all(sys.join("class/net")).unwrap();
        std::os::unix::fs::symlink(&dev, sys.join("bus/pci/devices/0000:03:00.0")).unwrap();
        std::os::unix::fs::symlink(dev.join("net/eth1"), sys.join("class/net/eth1")).unwrap();
        fs::write(dev.join("sriov_numvfs"), "0\n").unwrap();
        let k = Kernel {
            sys: sys.to_owned(),
        };
        let addr: PciAddress = "0000:03:00.0".parse().unwrap();
        assert_eq!(k.resolve("eth1").unwrap(), (addr, "eth1".into()));
        assert_eq!(k.resolve("0000:03:00.0").unwrap(), (addr, "eth1".into()));
        assert!(k.vfs(addr).unwrap().is_empty());
        for bad in ["eth9", "../x", ""] {
            let e = griffin_devices::Chain(&k.resolve(bad).unwrap_err()).to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
