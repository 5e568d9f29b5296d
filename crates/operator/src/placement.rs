//! Where replicas go: a pure function from what each placement asks for
//! and what each node or device offers to an assignment, with the reason
//! for every replica that has nowhere to run.
//!
//! Rules, in order: a target must be online, of the placement's tier, carry
//! every label of its selector, be of its architecture, and have its
//! accelerator when that is required. Among those, targets that already run
//! the placement come first (an update does not move replicas), then those
//! with a wanted accelerator, then the ones with the most free memory. A
//! replica takes memory, a module slot and (when asked for) one
//! accelerator from its target; `spread` allows one replica per target.

use std::collections::BTreeMap;
use weft_crd::Tier;

/// A node or a device, as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub tier: Tier,
    pub labels: BTreeMap<String, String>,
    pub architecture: String,
    pub accelerators: BTreeMap<String, u32>,
    /// Free memory, bytes.
    pub memory: u64,
    /// Free module slots (pods on a node, modules on a device).
    pub slots: u32,
    pub online: bool,
    /// A Kubernetes node (its replicas are pods), not an agent-only device.
    pub node: bool,
}

/// What one placement asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub placement: String,
    pub tier: Tier,
    pub replicas: u32,
    pub selector: BTreeMap<String, String>,
    pub architecture: Option<String>,
    /// `(kind, required)`.
    pub accelerator: Option<(String, bool)>,
    /// Memory per replica, bytes.
    pub memory: u64,
    pub spread: bool,
    /// Targets running this placement now.
    pub current: Vec<String>,
}

/// Where one placement's replicas go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// `(target, replicas)`, in placement order.
    pub assigned: Vec<(String, u32)>,
    /// Of those, the replicas on Kubernetes nodes (pods of a Deployment).
    pub on_nodes: u32,
    /// The agent-only devices chosen, by name.
    pub devices: Vec<String>,
    pub unscheduled: u32,
    /// Why `unscheduled` replicas have nowhere to run.
    pub reason: Option<String>,
}

impl Outcome {
    pub fn scheduled(&self) -> u32 {
        self.assigned.iter().map(|(_, n)| n).sum()
    }
}

fn mib(b: u64) -> u64 {
    b.div_ceil(1 << 20)
}

fn tier_name(t: Tier) -> &'static str {
    match t {
        Tier::Cloud => "node",
        Tier::Edge => "device",
    }
}

/// Place every demand, in order, on what the earlier ones left.
pub fn place(demands: &[Demand], targets: &[Target]) -> Vec<Outcome> {
    let mut free: Vec<Target> = targets.to_vec();
    demands.iter().map(|d| place_one(d, &mut free)).collect()
}

fn place_one(d: &Demand, free: &mut [Target]) -> Outcome {
    let what = tier_name(d.tier);
    // Filter, remembering what eliminated the most candidates last.
    let mut why_none = None;
    let mut eligible: Vec<usize> = Vec::new();
    let of_tier: Vec<usize> = (0..free.len())
        .filter(|&i| free[i].tier == d.tier)
        .collect();
    if of_tier.is_empty() {
        why_none = Some(format!(
            "there is no {what} of the {} tier",
            tier_label(d.tier)
        ));
    }
    let mut offline = 0;
    for &i in &of_tier {
        let t = &free[i];
        if let Some((k, v)) = d.selector.iter().find(|(k, v)| t.labels.get(*k) != Some(v)) {
            why_none = Some(format!("no {what} has the label {k}={v}"));
            continue;
        }
        if let Some(a) = &d.architecture
            && &t.architecture != a
        {
            why_none = Some(format!("no matching {what} has the architecture {a}"));
            continue;
        }
        if let Some((kind, true)) = &d.accelerator
            && t.accelerators.get(kind).copied().unwrap_or(0) == 0
        {
            why_none = Some(format!("no matching {what} offers the accelerator {kind}"));
            continue;
        }
        if !t.online {
            offline += 1;
            why_none = Some(format!("every matching {what} is offline"));
            continue;
        }
        eligible.push(i);
    }
    let rank = |t: &Target| {
        let current = d.current.contains(&t.name);
        let wanted = d
            .accelerator
            .as_ref()
            .is_some_and(|(k, _)| t.accelerators.get(k).copied().unwrap_or(0) > 0);
        (std::cmp::Reverse(current), std::cmp::Reverse(wanted))
    };
    let mut out = Outcome::default();
    let mut per: BTreeMap<usize, u32> = BTreeMap::new();
    let mut last_reason = None;
    for _ in 0..d.replicas {
        // Room for one more replica, spread aside.
        let room = |i: &usize| {
            let t = &free[*i];
            let accel_ok = match &d.accelerator {
                Some((k, true)) => t.accelerators.get(k).copied().unwrap_or(0) > 0,
                _ => true,
            };
            t.memory >= d.memory && t.slots > 0 && accel_ok
        };
        let fits = |i: &usize| room(i) && !(d.spread && per.contains_key(i));
        let best = eligible
            .iter()
            .filter(|i| fits(i))
            .min_by_key(|&&i| {
                (
                    rank(&free[i]),
                    std::cmp::Reverse(free[i].memory),
                    free[i].name.clone(),
                )
            })
            .copied();
        let Some(i) = best else {
            let spread_full = d.spread && eligible.iter().any(|i| per.contains_key(i) && room(i));
            last_reason = Some(if eligible.is_empty() {
                why_none
                    .clone()
                    .unwrap_or_else(|| format!("no {what} matches"))
            } else if spread_full {
                format!(
                    "spread allows one replica per {what} and only {} {what}(s) match",
                    eligible.len()
                )
            } else {
                format!(
                    "the {} matching {what}(s) lack room: each replica needs {} MiB and a module slot{}",
                    eligible.len(),
                    mib(d.memory),
                    match &d.accelerator {
                        Some((k, true)) => format!(" and one {k}"),
                        _ => String::new(),
                    }
                )
            });
            out.unscheduled += 1;
            continue;
        };
        let t = &mut free[i];
        t.memory -= d.memory;
        t.slots -= 1;
        if let Some((k, true)) = &d.accelerator
            && let Some(n) = t.accelerators.get_mut(k)
        {
            *n -= 1;
        }
        *per.entry(i).or_default() += 1;
    }
    out.on_nodes = per
        .iter()
        .filter(|(i, _)| free[**i].node)
        .map(|(_, n)| n)
        .sum();
    out.devices = per
        .keys()
        .filter(|i| !free[**i].node)
        .map(|i| free[*i].name.clone())
        .collect();
    out.devices.sort();
    let mut assigned: Vec<(String, u32)> = per
        .into_iter()
        .map(|(i, n)| (free[i].name.clone(), n))
        .collect();
    assigned.sort();
    out.assigned = assigned;
    if out.unscheduled > 0 {
        out.reason = last_reason.map(|r| {
            if offline > 0 && !eligible.is_empty() {
                format!("{r} ({offline} more matching {what}(s) offline)")
            } else {
                r
            }
        });
    }
    out
}

fn tier_label(t: Tier) -> &'static str {
    match t {
        Tier::Cloud => "cloud",
        Tier::Edge => "edge",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn target(name: &str, tier: Tier, mem_mib: u64, slots: u32) -> Target {
        Target {
            name: name.into(),
            tier,
            labels: BTreeMap::new(),
            architecture: "amd64".into(),
            accelerators: BTreeMap::new(),
            memory: mem_mib << 20,
            slots,
            online: true,
            node: tier == Tier::Cloud,
        }
    }

    fn demand(replicas: u32, tier: Tier, mem_mib: u64) -> Demand {
        Demand {
            placement: "p".into(),
            tier,
            replicas,
            selector: BTreeMap::new(),
            architecture: None,
            accelerator: None,
            memory: mem_mib << 20,
            spread: false,
            current: Vec::new(),
        }
    }

    #[test]
    fn reasons_name_what_is_missing() {
        let mut gpu = target("gpu-node", Tier::Cloud, 1024, 10);
        gpu.accelerators.insert("nvidia.com/gpu".into(), 1);
        let targets = vec![
            target("a", Tier::Cloud, 1024, 10),
            gpu,
            target("d1", Tier::Edge, 512, 2),
        ];

        let mut need_gpu = demand(2, Tier::Cloud, 128);
        need_gpu.accelerator = Some(("nvidia.com/gpu".into(), true));
        let o = &place(&[need_gpu.clone()], &targets)[0];
        assert_eq!(o.assigned, vec![("gpu-node".into(), 1)]);
        assert_eq!(o.unscheduled, 1);
        assert!(
            o.reason.as_deref().unwrap().contains("nvidia.com/gpu"),
            "{o:?}"
        );

        need_gpu.accelerator = Some(("amd.com/gpu".into(), true));
        let o = &place(&[need_gpu], &targets)[0];
        assert_eq!((o.scheduled(), o.unscheduled), (0, 2));
        assert_eq!(
            o.reason.as_deref(),
            Some("no matching node offers the accelerator amd.com/gpu")
        );

        let mut labelled = demand(1, Tier::Edge, 64);
        labelled.selector.insert("zone".into(), "north".into());
        let o = &place(&[labelled], &targets)[0];
        assert_eq!(
            o.reason.as_deref(),
            Some("no device has the label zone=north")
        );

        let mut spread = demand(3, Tier::Edge, 64);
        spread.spread = true;
        let o = &place(&[spread], &targets)[0];
        assert_eq!((o.scheduled(), o.unscheduled), (1, 2));
        assert!(
            o.reason
                .as_deref()
                .unwrap()
                .contains("one replica per device"),
            "{o:?}"
        );

        let big = demand(2, Tier::Edge, 400);
        let o = &place(&[big], &targets)[0];
        assert_eq!((o.scheduled(), o.unscheduled), (1, 1));
        assert!(o.reason.as_deref().unwrap().contains("400 MiB"), "{o:?}");

        let mut offline = targets.clone();
        offline[2].online = false;
        let o = &place(&[demand(1, Tier::Edge, 64)], &offline)[0];
        assert_eq!(
            o.reason.as_deref(),
            Some("every matching device is offline")
        );
    }

    #[test]
    fn current_targets_keep_their_replicas_and_wanted_accelerators_come_next() {
        let mut g = target("g", Tier::Edge, 256, 4);
        g.accelerators.insert("gpu".into(), 1);
        let targets = vec![
            target("a", Tier::Edge, 4096, 4),
            target("b", Tier::Edge, 256, 4),
            g,
        ];
        let mut d = demand(1, Tier::Edge, 64);
        d.current = vec!["b".into()];
        assert_eq!(
            place(&[d.clone()], &targets)[0].assigned,
            vec![("b".into(), 1)]
        );
        d.current.clear();
        d.accelerator = Some(("gpu".into(), false));
        assert_eq!(
            place(&[d.clone()], &targets)[0].assigned,
            vec![("g".into(), 1)]
        );
        d.accelerator = None;
        // Otherwise the most free memory.
        assert_eq!(place(&[d], &targets)[0].assigned, vec![("a".into(), 1)]);
    }

    fn arb_target(i: usize) -> impl Strategy<Value = Target> {
        (
            prop_oneof![Just(Tier::Cloud), Just(Tier::Edge)],
            prop::collection::btree_map(
                prop_oneof![Just("zone".to_string()), Just("rack".to_string())],
                prop_oneof![Just("a".to_string()), Just("b".to_string())],
                0..2,
            ),
            prop_oneof![Just("amd64".to_string()), Just("arm64".to_string())],
            0u32..3,
            0u64..2048,
            0u32..5,
            any::<bool>(),
        )
            .prop_map(
                move |(tier, labels, architecture, gpus, mem, slots, online)| Target {
                    name: format!("t{i}"),
                    tier,
                    labels,
                    architecture,
                    accelerators: if gpus > 0 {
                        BTreeMap::from([("gpu".to_string(), gpus)])
                    } else {
                        BTreeMap::new()
                    },
                    memory: mem << 20,
                    slots,
                    online,
                    node: tier == Tier::Cloud,
                },
            )
    }

    fn arb_demand(i: usize) -> impl Strategy<Value = Demand> {
        (
            prop_oneof![Just(Tier::Cloud), Just(Tier::Edge)],
            0u32..8,
            prop::collection::btree_map(
                prop_oneof![Just("zone".to_string()), Just("rack".to_string())],
                prop_oneof![Just("a".to_string()), Just("b".to_string())],
                0..2,
            ),
            prop::option::of(prop_oneof![
                Just("amd64".to_string()),
                Just("arm64".to_string())
            ]),
            prop::option::of(any::<bool>()),
            1u64..512,
            any::<bool>(),
        )
            .prop_map(
                move |(tier, replicas, selector, architecture, accel, mem, spread)| Demand {
                    placement: format!("p{i}"),
                    tier,
                    replicas,
                    selector,
                    architecture,
                    accelerator: accel.map(|r| ("gpu".to_string(), r)),
                    memory: mem << 20,
                    spread,
                    current: Vec::new(),
                },
            )
    }

    fn world() -> impl Strategy<Value = (Vec<Demand>, Vec<Target>)> {
        (
            (0usize..4).prop_flat_map(|n| (0..n).map(arb_demand).collect::<Vec<_>>()),
            (0usize..7).prop_flat_map(|n| (0..n).map(arb_target).collect::<Vec<_>>()),
        )
    }

    proptest! {
        #[test]
        fn placement_keeps_every_rule((demands, targets) in world()) {
            let outcomes = place(&demands, &targets);
            prop_assert_eq!(outcomes.len(), demands.len());
            let mut used_mem: BTreeMap<String, u64> = BTreeMap::new();
            let mut used_slots: BTreeMap<String, u32> = BTreeMap::new();
            let mut used_gpu: BTreeMap<String, u32> = BTreeMap::new();
            for (d, o) in demands.iter().zip(&outcomes) {
                // Every replica is placed or explained.
                prop_assert_eq!(o.scheduled() + o.unscheduled, d.replicas);
                prop_assert_eq!(o.unscheduled > 0, o.reason.is_some());
                for (name, n) in &o.assigned {
                    let t = targets.iter().find(|t| &t.name == name).unwrap();
                    // Requirements always hold.
                    prop_assert!(t.online && t.tier == d.tier);
                    prop_assert!(d.selector.iter().all(|(k, v)| t.labels.get(k) == Some(v)));
                    prop_assert!(d.architecture.as_ref().is_none_or(|a| a == &t.architecture));
                    if let Some((k, true)) = &d.accelerator {
                        prop_assert!(t.accelerators.get(k).copied().unwrap_or(0) >= *n);
                        *used_gpu.entry(name.clone()).or_default() += n;
                    }
                    // Spread means one per target.
                    prop_assert!(!d.spread || *n == 1);
                    *used_mem.entry(name.clone()).or_default() += d.memory * u64::from(*n);
                    *used_slots.entry(name.clone()).or_default() += n;
                }
            }
            // Never over capacity, across all placements together.
            for t in &targets {
                prop_assert!(used_mem.get(&t.name).copied().unwrap_or(0) <= t.memory);
                prop_assert!(used_slots.get(&t.name).copied().unwrap_or(0) <= t.slots);
                prop_assert!(used_gpu.get(&t.name).copied().unwrap_or(0) <= t.accelerators.get("gpu").copied().unwrap_or(0));
            }
        }

        #[test]
        fn a_replica_is_left_out_only_when_nothing_fits(d in arb_demand(0), targets in (0usize..6).prop_flat_map(|n| (0..n).map(arb_target).collect::<Vec<_>>())) {
            let o = &place(std::slice::from_ref(&d), &targets)[0];
            if o.unscheduled > 0 {
                // After placement, no eligible target could take one more.
                let mut left = targets.clone();
                for (name, n) in &o.assigned {
                    let t = left.iter_mut().find(|t| &t.name == name).unwrap();
                    t.memory -= d.memory * u64::from(*n);
                    t.slots -= n;
                    if let Some((k, true)) = &d.accelerator { *t.accelerators.get_mut(k).unwrap() -= n; }
                }
                for t in &left {
                    let eligible = t.online && t.tier == d.tier
                        && d.selector.iter().all(|(k, v)| t.labels.get(k) == Some(v))
                        && d.architecture.as_ref().is_none_or(|a| a == &t.architecture)
                        && match &d.accelerator { Some((k, true)) => t.accelerators.get(k).copied().unwrap_or(0) > 0, _ => true };
                    let taken = o.assigned.iter().any(|(n, _)| n == &t.name);
                    let room = t.memory >= d.memory && t.slots > 0 && !(d.spread && taken);
                    prop_assert!(!(eligible && room), "{} could take another replica: {:?}", t.name, o);
                }
            }
        }
    }
}
