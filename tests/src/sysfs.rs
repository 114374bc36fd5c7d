//! A builder for fake sysfs/procfs trees that `griffin_devices::discover`
//! can read.
//!
//! Describe a node — CPUs, caches, NUMA nodes, root buses, PCI functions,
//! netdevs, NVMe controllers, RDMA devices — then [`TreeBuilder::write`] it
//! below a directory (or [`TreeBuilder::build`] it into a fresh temporary
//! directory). The layout follows the kernel's:
//!
//! * PCI functions are directories below `sys/devices/pciDDDD:BB/`, nested
//!   under their parent bridges; `sys/bus/pci/devices/<BDF>` is a relative
//!   symlink (`../../../devices/pci0000:10/0000:10:00.0/…/<BDF>`).
//! * `driver`, `physfn` and `virtfnN` are relative symlinks
//!   (`../../../../bus/pci/drivers/igb`, `../0000:13:00.0`).
//! * `sys/class/{net,nvme,infiniband}/<name>` are relative symlinks into the
//!   owning function's directory (`…/<BDF>/net/eth1`,
//!   `…/<BDF>/virtio3/net/eth3`), or into `sys/devices/virtual/…` for
//!   devices on no PCI function.
//!
//! Attributes are written as the kernel prints them (`0x020000\n`, `-1\n`,
//! `0-3,8\n`). Bridges get no `config` file unless one is given, so their
//! roles (root, switch upstream/downstream port) come from the tree shape.
//! Any file can be damaged afterwards with plain `std::fs` calls.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Kernel cpulist form of a set of ids: `0-3,8,10-11` (empty for none).
pub fn cpulist(ids: &[u32]) -> String {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        while i + 1 < v.len() && v[i + 1] == v[i] + 1 {
            i += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == v[i] {
            write!(out, "{start}").unwrap();
        } else {
            write!(out, "{start}-{}", v[i]).unwrap();
        }
        i += 1;
    }
    out
}

/// Kernel cpumask form of a set of ids: 32-bit hex words, most significant
/// first, comma-separated (`00000000,000000ff`).
pub fn cpumask(ids: &[u32]) -> String {
    let words = ids.iter().max().map_or(1, |&m| m as usize / 32 + 1);
    let mut w = vec![0u32; words];
    for &id in ids {
        w[id as usize / 32] |= 1 << (id % 32);
    }
    let parts: Vec<String> = w.iter().rev().map(|x| format!("{x:08x}")).collect();
    parts.join(",")
}

/// A 256-byte config space with a PCI Express capability whose device/port
/// type is `port_type` (0 endpoint, 4 root port, 5 switch upstream port,
/// 6 switch downstream port, 7 PCIe-to-PCI bridge), behind a power
/// management capability, as a privileged read of `config` returns it.
pub fn pcie_config(vendor: u16, device: u16, port_type: u8) -> Vec<u8> {
    let mut c = vec![0u8; 256];
    c[0..2].copy_from_slice(&vendor.to_le_bytes());
    c[2..4].copy_from_slice(&device.to_le_bytes());
    c[6] = 0x10; // status: capability list present
    c[0x0e] = u8::from(matches!(port_type, 4..=7)); // header type 1 for bridges
    c[0x34] = 0x40;
    c[0x40] = 0x01; // power management, next at 0x60
    c[0x41] = 0x60;
    c[0x60] = 0x10; // PCI Express, last
    c[0x62] = (port_type << 4) | 2; // capability version 2
    c
}

/// The relative path from directory `from` to `to` (both relative to the
/// same root), as a symlink placed in `from` needs it.
pub fn relative(from: &Path, to: &Path) -> PathBuf {
    let f: Vec<Component> = from.components().collect();
    let t: Vec<Component> = to.components().collect();
    let common = f.iter().zip(&t).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..f.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c);
    }
    out
}

/// One logical CPU.
#[derive(Debug, Clone)]
struct Cpu {
    id: u32,
    package: u32,
    die: u32,
    core: u32,
    siblings: Vec<u32>,
}

/// One cache instance, written as `cpuN/cache/indexK` of each CPU sharing it.
#[derive(Debug, Clone)]
struct Cache {
    level: u32,
    kind: String,
    size: String,
    cpus: Vec<u32>,
}

/// One NUMA node.
#[derive(Debug, Clone)]
struct Node {
    id: u32,
    cpus: Vec<u32>,
    mem_kib: u64,
    free_kib: u64,
    distances: Vec<u32>,
}

/// A root bus (`pciDDDD:BB`) and the defaults of the functions below it.
#[derive(Debug, Clone)]
struct RootBus {
    name: String,
    numa_node: Option<u32>,
}

/// One PCI function. Build with [`Function::new`] or [`Function::bridge`]
/// and the chained setters, then add with [`TreeBuilder::pci`].
#[derive(Debug, Clone)]
pub struct Function {
    addr: String,
    parent: String,
    class: u32,
    vendor: u16,
    device: u16,
    subsystem: Option<(u16, u16)>,
    driver: Option<String>,
    numa_node: Option<i32>,
    local_cpus: Option<Vec<u32>>,
    link: Option<(String, u32, String, u32)>,
    sriov: Option<(u32, u32)>,
    physfn: Option<String>,
    config: Option<Vec<u8>>,
    iommu_group: Option<u32>,
}

impl Function {
    /// A function `addr` (`0000:13:00.0`) whose parent is either a root bus
    /// (`pci0000:10`) or a bridge's address.
    pub fn new(addr: &str, parent: &str, class: u32, vendor: u16, device: u16) -> Self {
        Self {
            addr: addr.into(),
            parent: parent.into(),
            class,
            vendor,
            device,
            subsystem: None,
            driver: None,
            numa_node: None,
            local_cpus: None,
            link: None,
            sriov: None,
            physfn: None,
            config: None,
            iommu_group: None,
        }
    }

    /// A PCI-to-PCI bridge (root port or switch port: class `0x060400`,
    /// QEMU's `1b36:000c`, driver `pcieport`).
    pub fn bridge(addr: &str, parent: &str) -> Self {
        Self::new(addr, parent, 0x060400, 0x1b36, 0x000c).driver("pcieport")
    }

    /// A host bridge (class `0x060000`, Intel's Q35 `8086:29c0`), no
    /// driver.
    pub fn host_bridge(addr: &str, parent: &str) -> Self {
        Self::new(addr, parent, 0x060000, 0x8086, 0x29c0)
    }

    /// Sets the vendor and device ids.
    pub fn ids(mut self, vendor: u16, device: u16) -> Self {
        self.vendor = vendor;
        self.device = device;
        self
    }

    /// Sets `subsystem_vendor` and `subsystem_device`.
    pub fn subsystem(mut self, vendor: u16, device: u16) -> Self {
        self.subsystem = Some((vendor, device));
        self
    }

    /// Binds a driver (`driver` → `bus/pci/drivers/<name>`).
    pub fn driver(mut self, name: &str) -> Self {
        self.driver = Some(name.into());
        self
    }

    /// Sets `numa_node` (default: the root bus's node, or -1).
    pub fn numa(mut self, node: i32) -> Self {
        self.numa_node = Some(node);
        self
    }

    /// Sets `local_cpulist`/`local_cpus` (default: the CPUs of the root
    /// bus's node, or every CPU).
    pub fn local_cpus(mut self, cpus: &[u32]) -> Self {
        self.local_cpus = Some(cpus.to_vec());
        self
    }

    /// Sets the link attributes (`"8.0 GT/s PCIe"`, width, max speed, max
    /// width).
    pub fn link(mut self, speed: &str, width: u32, max_speed: &str, max_width: u32) -> Self {
        self.link = Some((speed.into(), width, max_speed.into(), max_width));
        self
    }

    /// Makes the function an SR-IOV PF (`sriov_totalvfs`, `sriov_numvfs`).
    /// Its `virtfnN` links come from the functions declared [`Self::vf_of`]
    /// it, numbered in the order they were added.
    pub fn sriov(mut self, total_vfs: u32, num_vfs: u32) -> Self {
        self.sriov = Some((total_vfs, num_vfs));
        self
    }

    /// Makes the function a VF of `pf` (a `physfn` link).
    pub fn vf_of(mut self, pf: &str) -> Self {
        self.physfn = Some(pf.into());
        self
    }

    /// Puts the function in IOMMU group `group` (an `iommu_group` link to
    /// `sys/kernel/iommu_groups/<group>`).
    pub fn iommu_group(mut self, group: u32) -> Self {
        self.iommu_group = Some(group);
        self
    }

    /// Writes a `config` file with these bytes.
    pub fn config(mut self, bytes: Vec<u8>) -> Self {
        self.config = Some(bytes);
        self
    }
}

/// Where a class device (netdev, NVMe controller, RDMA device) lives.
#[derive(Debug, Clone)]
struct ClassDev {
    class: String,
    name: String,
    /// Owning PCI function; `None` for `sys/devices/virtual/<class>/<name>`.
    pci: Option<String>,
    /// Directory between the function and `<class>/<name>` (`virtio3`).
    via: Option<String>,
    /// Files inside the class device's directory.
    files: Vec<(String, String)>,
}

/// A description of a node, written out by [`TreeBuilder::write`].
#[derive(Debug, Clone, Default)]
pub struct TreeBuilder {
    cpus: Vec<Cpu>,
    isolated: Vec<u32>,
    caches: Vec<Cache>,
    nodes: Vec<Node>,
    meminfo_kib: Option<(u64, u64)>,
    buses: Vec<RootBus>,
    functions: Vec<Function>,
    class_devs: Vec<ClassDev>,
}

impl TreeBuilder {
    /// An empty description.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an online CPU. `siblings` are its SMT siblings, itself included.
    pub fn cpu(
        &mut self,
        id: u32,
        package: u32,
        die: u32,
        core: u32,
        siblings: &[u32],
    ) -> &mut Self {
        self.cpus.push(Cpu {
            id,
            package,
            die,
            core,
            siblings: siblings.to_vec(),
        });
        self
    }

    /// Marks CPUs isolated (`cpu/isolated`).
    pub fn isolated(&mut self, cpus: &[u32]) -> &mut Self {
        self.isolated = cpus.to_vec();
        self
    }

    /// Adds a cache shared by `cpus`: `kind` is `Data`, `Instruction` or
    /// `Unified`, `size` as sysfs prints it (`32K`). Each CPU gets it as its
    /// next `indexK`, so add L1d, L1i, L2, L3 in that order.
    pub fn cache(&mut self, level: u32, kind: &str, size: &str, cpus: &[u32]) -> &mut Self {
        self.caches.push(Cache {
            level,
            kind: kind.into(),
            size: size.into(),
            cpus: cpus.to_vec(),
        });
        self
    }

    /// Adds a NUMA node with its CPUs, memory (KiB) and SLIT row. Without
    /// any node, no `sys/devices/system/node` is written.
    pub fn node(
        &mut self,
        id: u32,
        cpus: &[u32],
        mem_kib: u64,
        free_kib: u64,
        distances: &[u32],
    ) -> &mut Self {
        self.nodes.push(Node {
            id,
            cpus: cpus.to_vec(),
            mem_kib,
            free_kib,
            distances: distances.to_vec(),
        });
        self
    }

    /// Sets `/proc/meminfo` (default: the sum of the nodes, or 4 GiB).
    pub fn meminfo(&mut self, total_kib: u64, free_kib: u64) -> &mut Self {
        self.meminfo_kib = Some((total_kib, free_kib));
        self
    }

    /// Adds a root bus (`pci0000:10`); functions below it default to
    /// `numa_node` (`None`: -1) and that node's CPUs as `local_cpulist`.
    pub fn root_bus(&mut self, name: &str, numa_node: Option<u32>) -> &mut Self {
        self.buses.push(RootBus {
            name: name.into(),
            numa_node,
        });
        self
    }

    /// Adds a PCI function.
    pub fn pci(&mut self, f: Function) -> &mut Self {
        self.functions.push(f);
        self
    }

    /// Adds a netdev on a PCI function (`<BDF>/net/<name>`).
    pub fn netdev(&mut self, name: &str, pci: &str) -> &mut Self {
        self.class_dev("net", name, Some(pci), None, vec![])
    }

    /// Adds a netdev below an intermediate device of a PCI function, as
    /// virtio has it (`<BDF>/virtio3/net/<name>`).
    pub fn netdev_via(&mut self, name: &str, pci: &str, via: &str) -> &mut Self {
        self.class_dev("net", name, Some(pci), Some(via), vec![])
    }

    /// Adds a virtual netdev (`sys/devices/virtual/net/<name>`).
    pub fn virtual_netdev(&mut self, name: &str) -> &mut Self {
        self.class_dev("net", name, None, None, vec![])
    }

    /// Adds an NVMe controller on a PCI function (`<BDF>/nvme/<name>`).
    pub fn nvme(&mut self, name: &str, pci: &str) -> &mut Self {
        self.class_dev("nvme", name, Some(pci), None, vec![])
    }

    /// Adds an RDMA device on a PCI function whose port 1 GID table names
    /// `netdevs` (`ports/1/gid_attrs/ndevs/N`).
    pub fn rdma(&mut self, name: &str, pci: &str, netdevs: &[&str]) -> &mut Self {
        let files = netdevs
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("ports/1/gid_attrs/ndevs/{i}"), format!("{n}\n")))
            .collect();
        self.class_dev("infiniband", name, Some(pci), None, files)
    }

    /// Adds a soft-RoCE device (`sys/devices/virtual/infiniband/<name>`)
    /// whose `parent` is the netdev `parent`.
    pub fn soft_rdma(&mut self, name: &str, parent: &str) -> &mut Self {
        let files = vec![("parent".to_owned(), format!("{parent}\n"))];
        self.class_dev("infiniband", name, None, None, files)
    }

    /// Writes `file` (e.g. `type`, `operstate`) with `text` (a newline is
    /// added) in the directory of the netdev `name`, which must have been
    /// added.
    ///
    /// # Panics
    /// When no netdev `name` was added.
    pub fn netdev_attr(&mut self, name: &str, file: &str, text: &str) -> &mut Self {
        let dev = self
            .class_devs
            .iter_mut()
            .find(|d| d.class == "net" && d.name == name)
            .unwrap_or_else(|| panic!("netdev {name} was not added"));
        dev.files.push((file.to_owned(), format!("{text}\n")));
        self
    }

    /// Adds a character device of class `class` named `name` below the PCI
    /// function `pci` (`<BDF>/<class>/<name>`, linked from
    /// `sys/class/<class>/<name>`), or below `sys/devices/virtual` without
    /// one: its `dev` (`major:minor`) and `uevent` (`MAJOR`, `MINOR`,
    /// `DEVNAME=devname`), plus `files` (e.g. `ibdev` of `uverbsN`).
    pub fn char_dev(
        &mut self,
        pci: Option<&str>,
        class: &str,
        name: &str,
        devname: &str,
        (major, minor): (u32, u32),
        files: &[(&str, &str)],
    ) -> &mut Self {
        let mut all = vec![
            ("dev".to_owned(), format!("{major}:{minor}\n")),
            (
                "uevent".to_owned(),
                format!("MAJOR={major}\nMINOR={minor}\nDEVNAME={devname}\n"),
            ),
        ];
        all.extend(
            files
                .iter()
                .map(|(f, t)| ((*f).to_owned(), format!("{t}\n"))),
        );
        self.class_dev(class, name, pci, None, all)
    }

    fn class_dev(
        &mut self,
        class: &str,
        name: &str,
        pci: Option<&str>,
        via: Option<&str>,
        files: Vec<(String, String)>,
    ) -> &mut Self {
        self.class_devs.push(ClassDev {
            class: class.to_owned(),
            name: name.into(),
            pci: pci.map(Into::into),
            via: via.map(Into::into),
            files,
        });
        self
    }

    /// Writes the tree into a new temporary directory.
    pub fn build(&self) -> io::Result<tempfile::TempDir> {
        let dir = tempfile::tempdir()?;
        self.write(dir.path())?;
        Ok(dir)
    }

    /// Writes the tree below `root`, which should be empty.
    pub fn write(&self, root: &Path) -> io::Result<()> {
        let w = Writer { root };
        self.write_cpus(&w)?;
        self.write_nodes(&w)?;
        self.write_pci(&w)?;
        for d in &self.class_devs {
            let base = match &d.pci {
                Some(pci) => {
                    let mut p = self.device_dir(pci)?;
                    if let Some(via) = &d.via {
                        p.push(via);
                    }
                    p
                }
                None => PathBuf::from("sys/devices/virtual"),
            };
            let dir = base.join(&d.class).join(&d.name);
            w.mkdir(&dir)?;
            for (f, text) in &d.files {
                w.file(&dir.join(f), text)?;
            }
            w.link(&Path::new("sys/class").join(&d.class).join(&d.name), &dir)?;
        }
        Ok(())
    }

    fn all_cpus(&self) -> Vec<u32> {
        self.cpus.iter().map(|c| c.id).collect()
    }

    fn write_cpus(&self, w: &Writer) -> io::Result<()> {
        let dir = Path::new("sys/devices/system/cpu");
        let all = cpulist(&self.all_cpus());
        for f in ["online", "possible", "present"] {
            w.file(&dir.join(f), &format!("{all}\n"))?;
        }
        w.file(
            &dir.join("isolated"),
            &format!("{}\n", cpulist(&self.isolated)),
        )?;
        for c in &self.cpus {
            let cdir = dir.join(format!("cpu{}", c.id));
            let topo = cdir.join("topology");
            let package: Vec<u32> = self
                .cpus
                .iter()
                .filter(|o| o.package == c.package)
                .map(|o| o.id)
                .collect();
            w.file(
                &topo.join("physical_package_id"),
                &format!("{}\n", c.package),
            )?;
            w.file(&topo.join("die_id"), &format!("{}\n", c.die))?;
            let die: Vec<u32> = self
                .cpus
                .iter()
                .filter(|o| o.package == c.package && o.die == c.die)
                .map(|o| o.id)
                .collect();
            w.file(&topo.join("die_cpus_list"), &format!("{}\n", cpulist(&die)))?;
            w.file(
                &topo.join("package_cpus_list"),
                &format!("{}\n", cpulist(&package)),
            )?;
            w.file(&topo.join("core_id"), &format!("{}\n", c.core))?;
            w.file(
                &topo.join("thread_siblings_list"),
                &format!("{}\n", cpulist(&c.siblings)),
            )?;
            w.file(
                &topo.join("thread_siblings"),
                &format!("{}\n", cpumask(&c.siblings)),
            )?;
            w.file(
                &topo.join("core_siblings_list"),
                &format!("{}\n", cpulist(&package)),
            )?;
            let mine = self.caches.iter().filter(|k| k.cpus.contains(&c.id));
            for (i, k) in mine.enumerate() {
                let idir = cdir.join(format!("cache/index{i}"));
                w.file(&idir.join("level"), &format!("{}\n", k.level))?;
                w.file(&idir.join("type"), &format!("{}\n", k.kind))?;
                w.file(&idir.join("size"), &format!("{}\n", k.size))?;
                w.file(
                    &idir.join("shared_cpu_list"),
                    &format!("{}\n", cpulist(&k.cpus)),
                )?;
                w.file(
                    &idir.join("shared_cpu_map"),
                    &format!("{}\n", cpumask(&k.cpus)),
                )?;
            }
        }
        Ok(())
    }

    fn write_nodes(&self, w: &Writer) -> io::Result<()> {
        let (total, free) = self.meminfo_kib.unwrap_or_else(|| {
            if self.nodes.is_empty() {
                (4 << 20, 2 << 20)
            } else {
                (
                    self.nodes.iter().map(|n| n.mem_kib).sum(),
                    self.nodes.iter().map(|n| n.free_kib).sum(),
                )
            }
        });
        w.file(
            Path::new("proc/meminfo"),
            &format!("MemTotal:       {total:>8} kB\nMemFree:        {free:>8} kB\nMemAvailable:   {free:>8} kB\n"),
        )?;
        if self.nodes.is_empty() {
            return Ok(());
        }
        let dir = Path::new("sys/devices/system/node");
        let ids: Vec<u32> = self.nodes.iter().map(|n| n.id).collect();
        for f in ["online", "possible", "has_memory"] {
            w.file(&dir.join(f), &format!("{}\n", cpulist(&ids)))?;
        }
        for n in &self.nodes {
            let ndir = dir.join(format!("node{}", n.id));
            w.file(&ndir.join("cpulist"), &format!("{}\n", cpulist(&n.cpus)))?;
            w.file(&ndir.join("cpumap"), &format!("{}\n", cpumask(&n.cpus)))?;
            let id = n.id;
            w.file(
                &ndir.join("meminfo"),
                &format!(
                    "Node {id} MemTotal:       {:>8} kB\nNode {id} MemFree:        {:>8} kB\nNode {id} MemUsed:        {:>8} kB\n",
                    n.mem_kib,
                    n.free_kib,
                    n.mem_kib.saturating_sub(n.free_kib)
                ),
            )?;
            let row: Vec<String> = n.distances.iter().map(u32::to_string).collect();
            w.file(&ndir.join("distance"), &format!("{}\n", row.join(" ")))?;
        }
        Ok(())
    }

    /// The directory of function `addr` relative to the tree root
    /// (`sys/devices/pci0000:10/0000:10:00.0/…/<addr>`), following parents
    /// up to the root bus.
    pub fn device_dir(&self, addr: &str) -> io::Result<PathBuf> {
        let mut chain = vec![addr.to_owned()];
        let mut cur = addr;
        loop {
            let f = self.function(cur)?;
            if f.parent.starts_with("pci") {
                if !self.buses.iter().any(|b| b.name == f.parent) {
                    return Err(invalid(format!(
                        "{cur}: root bus {} was not added",
                        f.parent
                    )));
                }
                chain.push(f.parent.clone());
                break;
            }
            if chain.len() > self.functions.len() {
                return Err(invalid(format!("{addr}: parent chain loops")));
            }
            chain.push(f.parent.clone());
            cur = &f.parent;
        }
        let mut p = PathBuf::from("sys/devices");
        p.extend(chain.iter().rev());
        Ok(p)
    }

    fn function(&self, addr: &str) -> io::Result<&Function> {
        self.functions
            .iter()
            .find(|f| f.addr == addr)
            .ok_or_else(|| invalid(format!("PCI function {addr} was not added")))
    }

    /// The root bus a function hangs off.
    fn bus_of(&self, addr: &str) -> io::Result<&RootBus> {
        let dir = self.device_dir(addr)?;
        let name = dir
            .components()
            .nth(2)
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        self.buses
            .iter()
            .find(|b| Some(&b.name) == name.as_ref())
            .ok_or_else(|| invalid(format!("{addr}: no root bus")))
    }

    fn write_pci(&self, w: &Writer) -> io::Result<()> {
        let bus_dir = Path::new("sys/bus/pci/devices");
        w.mkdir(bus_dir)?;
        for b in &self.buses {
            w.mkdir(&Path::new("sys/devices").join(&b.name))?;
        }
        for f in &self.functions {
            let dir = self.device_dir(&f.addr)?;
            w.mkdir(&dir)?;
            w.link(&bus_dir.join(&f.addr), &dir)?;
            let attr = |name: &str, text: String| w.file(&dir.join(name), &format!("{text}\n"));
            attr("class", format!("0x{:06x}", f.class))?;
            attr("vendor", format!("0x{:04x}", f.vendor))?;
            attr("device", format!("0x{:04x}", f.device))?;
            let (sv, sd) = f.subsystem.unwrap_or((f.vendor, f.device));
            attr("subsystem_vendor", format!("0x{sv:04x}"))?;
            attr("subsystem_device", format!("0x{sd:04x}"))?;
            let bus = self.bus_of(&f.addr)?;
            let numa = f
                .numa_node
                .unwrap_or_else(|| bus.numa_node.map_or(-1, |n| n as i32));
            attr("numa_node", numa.to_string())?;
            let local = f.local_cpus.clone().unwrap_or_else(|| {
                bus.numa_node
                    .and_then(|n| self.nodes.iter().find(|x| x.id == n))
                    .map_or_else(|| self.all_cpus(), |n| n.cpus.clone())
            });
            attr("local_cpulist", cpulist(&local))?;
            attr("local_cpus", cpumask(&local))?;
            if let Some((speed, width, max_speed, max_width)) = &f.link {
                attr("current_link_speed", speed.clone())?;
                attr("current_link_width", width.to_string())?;
                attr("max_link_speed", max_speed.clone())?;
                attr("max_link_width", max_width.to_string())?;
            }
            if let Some((total, num)) = f.sriov {
                attr("sriov_totalvfs", total.to_string())?;
                attr("sriov_numvfs", num.to_string())?;
                let vfs = self
                    .functions
                    .iter()
                    .filter(|v| v.physfn.as_deref() == Some(&f.addr));
                for (i, vf) in vfs.enumerate() {
                    w.link(&dir.join(format!("virtfn{i}")), &self.device_dir(&vf.addr)?)?;
                }
            }
            if let Some(pf) = &f.physfn {
                w.link(&dir.join("physfn"), &self.device_dir(pf)?)?;
            }
            if let Some(driver) = &f.driver {
                let ddir = Path::new("sys/bus/pci/drivers").join(driver);
                w.mkdir(&ddir)?;
                w.link(&dir.join("driver"), &ddir)?;
                w.link(&ddir.join(&f.addr), &dir)?;
            }
            if let Some(group) = f.iommu_group {
                let gdir = PathBuf::from(format!("sys/kernel/iommu_groups/{group}"));
                w.mkdir(&gdir.join("devices"))?;
                w.link(&dir.join("iommu_group"), &gdir)?;
            }
            if let Some(config) = &f.config {
                let path = w.root.join(dir.join("config"));
                fs::write(&path, config).map_err(|e| annotate(e, &path))?;
            }
        }
        Ok(())
    }
}

/// Writes files, directories and relative symlinks below a root.
struct Writer<'a> {
    root: &'a Path,
}

impl Writer<'_> {
    fn mkdir(&self, rel: &Path) -> io::Result<()> {
        let path = self.root.join(rel);
        fs::create_dir_all(&path).map_err(|e| annotate(e, &path))
    }

    fn file(&self, rel: &Path, text: &str) -> io::Result<()> {
        if let Some(parent) = rel.parent() {
            self.mkdir(parent)?;
        }
        let path = self.root.join(rel);
        fs::write(&path, text).map_err(|e| annotate(e, &path))
    }

    /// A symlink at `rel` pointing at `target`, both relative to the root;
    /// the link's text is relative to the link's directory.
    fn link(&self, rel: &Path, target: &Path) -> io::Result<()> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        self.mkdir(parent)?;
        let path = self.root.join(rel);
        std::os::unix::fs::symlink(relative(parent, target), &path).map_err(|e| annotate(e, &path))
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn annotate(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(cpulist(&[3, 0, 1, 2, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(cpulist(&[]), "");
        assert_eq!(cpumask(&[0, 1, 2, 3, 4, 5, 6, 7]), "000000ff");
        assert_eq!(cpumask(&[32]), "00000001,00000000");
        assert_eq!(
            relative(
                Path::new("sys/bus/pci/devices"),
                Path::new("sys/devices/pci0000:00/0000:00:02.0")
            ),
            Path::new("../../../devices/pci0000:00/0000:00:02.0")
        );
        assert_eq!(
            relative(
                Path::new("sys/devices/pci0000:10/0000:13:10.0"),
                Path::new("sys/devices/pci0000:10/0000:13:00.0")
            ),
            Path::new("../0000:13:00.0")
        );
    }

    #[test]
    fn writes_relative_links() {
        let mut t = TreeBuilder::new();
        t.cpu(0, 0, 0, 0, &[0]).root_bus("pci0000:00", None);
        t.pci(Function::bridge("0000:00:01.0", "pci0000:00"));
        t.pci(
            Function::new("0000:01:00.0", "0000:00:01.0", 0x020000, 0x8086, 0x10c9)
                .driver("igb")
                .sriov(2, 1),
        );
        t.pci(
            Function::new("0000:01:10.0", "0000:00:01.0", 0x020000, 0x8086, 0x10ca)
                .vf_of("0000:01:00.0"),
        );
        t.netdev("eth0", "0000:01:00.0");
        let dir = t.build().unwrap();
        let r = dir.path();
        let link = |p: &str| fs::read_link(r.join(p)).unwrap();
        assert_eq!(
            link("sys/bus/pci/devices/0000:01:00.0"),
            Path::new("../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0")
        );
        let dev = "sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0";
        assert_eq!(
            link(&format!("{dev}/driver")),
            Path::new("../../../../bus/pci/drivers/igb")
        );
        assert_eq!(
            link(&format!("{dev}/virtfn0")),
            Path::new("../0000:01:10.0")
        );
        assert_eq!(
            link("sys/class/net/eth0"),
            Path::new("../../devices/pci0000:00/0000:00:01.0/0000:01:00.0/net/eth0")
        );
        assert!(r.join("sys/class/net/eth0").is_dir());
        assert!(r.join(format!("{dev}/driver")).is_dir());
        assert_eq!(
            fs::read_to_string(r.join(format!("{dev}/numa_node"))).unwrap(),
            "-1\n"
        );
        assert!(t
            .clone()
            .pci(Function::bridge("0000:05:00.0", "0000:04:00.0"))
            .build()
            .is_err());
    }
}
