//! The approximate kind's time windows: for each window W, a ring of sketches, one per step of
//! W/60 (whole seconds, at least 1), holding the addresses whose event time fell in that step.
//! A window's count is the union of its steps' sketches. That union is kept as one more sketch:
//! a coupon for a step inside the window updates it as it updates its step, and it is rebuilt
//! from the steps (at most a few dozen merges) only when the window moves on a step, so a read
//! is O(1). Steps ahead of now (up to `MAX_CLOCK_SKEW`) are kept and join the union when their
//! step comes, as the exact windows count them.
//!
//! Window sketches have at most [`WINDOW_LG_K`] = 12 (4 KiB dense, relative standard error
//! 1.6 %): with the default windows that is at most about 190 sketches, 760 KiB, whatever the
//! traffic. A sketch is dense only once its step saw about a thousand addresses; before, it
//! holds the coupons themselves.

use std::collections::BTreeMap;
use std::io::Read;

use datasketches::hll::{Coupon, HllSketch, HllUnion};

use super::{sketch, update};
use crate::counter::windows::WindowSettings;

/// The most registers a window's sketches have: `2^12`.
pub const WINDOW_LG_K: u8 = 12;

/// Every window's ring; see the module docs.
#[derive(Debug, Clone)]
pub struct Rings {
    rings: Vec<Ring>,
}

#[derive(Debug, Clone)]
struct Ring {
    label: String,
    /// The window's length in seconds: what the snapshot names it by.
    window_secs: u32,
    step_secs: i64,
    /// The window's length in steps.
    len: i64,
    /// The current step.
    now: i64,
    /// Each step's sketch, from the first inside the window to the last ahead of now.
    steps: BTreeMap<i64, HllSketch>,
    /// The union of the steps `now - len + 1 ..= now`.
    union: HllSketch,
    lg_k: u8,
}

impl Rings {
    /// Empty rings for `settings`, their sketches of `lg_k` registers at most
    /// [`WINDOW_LG_K`], starting at `now` (seconds since the Unix epoch).
    pub fn new(settings: &WindowSettings, lg_k: u8, now: i64) -> Rings {
        let lg_k = lg_k.min(WINDOW_LG_K);
        let rings = settings
            .windows
            .iter()
            .map(|(label, window)| {
                let window_secs = window.as_secs().min(u64::from(u32::MAX)) as u32;
                let step_secs = i64::from(window_secs / 60).max(1);
                Ring {
                    label: label.clone(),
                    window_secs,
                    step_secs,
                    len: (i64::from(window_secs) + step_secs - 1) / step_secs,
                    now: now.div_euclid(step_secs),
                    steps: BTreeMap::new(),
                    union: sketch(lg_k),
                    lg_k,
                }
            })
            .collect();
        Rings { rings }
    }

    /// Moves every window on to `now` (seconds).
    pub fn advance(&mut self, now: i64) {
        for ring in &mut self.rings {
            ring.advance(now);
        }
    }

    /// Counts `coupon` at `second` (its event time) in every window that still holds that
    /// time; whether any step's sketch changed.
    pub fn update(&mut self, coupon: Coupon, second: i64) -> bool {
        self.rings
            .iter_mut()
            .fold(false, |changed, ring| ring.update(coupon, second) | changed)
    }

    /// Each window's label and estimate, in the order of `WINDOWS`.
    pub fn counts(&self) -> Vec<(String, u64)> {
        self.rings
            .iter()
            .map(|r| (r.label.clone(), r.union.estimate().round() as u64))
            .collect()
    }

    /// Heap bytes of the sketches.
    pub fn memory_bytes(&self) -> usize {
        self.rings
            .iter()
            .map(|r| {
                r.union.estimated_size()
                    + r.steps
                        .values()
                        .map(HllSketch::estimated_size)
                        .sum::<usize>()
            })
            .sum()
    }

    /// Appends the rings to `out`: their number, then each one's window length, number of
    /// steps and steps (the step as `i64`, the sketch's length as `u32`, its DataSketches
    /// bytes), all little-endian.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.rings.len() as u32).to_le_bytes());
        for ring in &self.rings {
            out.extend_from_slice(&ring.window_secs.to_le_bytes());
            out.extend_from_slice(&(ring.steps.len() as u32).to_le_bytes());
            for (step, sketch) in &ring.steps {
                let bytes = sketch.serialize();
                out.extend_from_slice(&step.to_le_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                out.extend_from_slice(&bytes);
            }
        }
    }

    /// Reads what [`Rings::write`] wrote into the rings of the same window lengths (a window
    /// no longer in `WINDOWS` is skipped, a new one starts empty), then moves on to `now`.
    /// `None` when the bytes do not parse.
    pub fn read(&mut self, bytes: &mut &[u8], now: i64) -> Option<()> {
        for _ in 0..read_u32(bytes)? {
            let window_secs = read_u32(bytes)?;
            let mut ring = self.rings.iter_mut().find(|r| r.window_secs == window_secs);
            for _ in 0..read_u32(bytes)? {
                let mut step = [0; 8];
                bytes.read_exact(&mut step).ok()?;
                let len = read_u32(bytes)? as usize;
                let (this, rest) = bytes.split_at_checked(len)?;
                *bytes = rest;
                if let Some(ring) = &mut ring {
                    let sketch = HllSketch::deserialize(this).ok()?;
                    ring.steps.insert(i64::from_le_bytes(step), sketch);
                }
            }
        }
        for ring in &mut self.rings {
            ring.now = i64::MIN;
            ring.advance(now);
        }
        Some(())
    }
}

fn read_u32(bytes: &mut &[u8]) -> Option<u32> {
    let mut word = [0; 4];
    bytes.read_exact(&mut word).ok()?;
    Some(u32::from_le_bytes(word))
}

impl Ring {
    fn advance(&mut self, now: i64) {
        let step = now.div_euclid(self.step_secs);
        if step <= self.now {
            return;
        }
        self.now = step;
        let first = step - self.len + 1;
        self.steps = self.steps.split_off(&first);
        let mut union = HllUnion::new(self.lg_k).expect("lg_k is validated");
        for (_, sketch) in self.steps.range(..=step) {
            union.update(sketch);
        }
        self.union = union.to_sketch(datasketches::hll::HllType::Hll8);
    }

    fn update(&mut self, coupon: Coupon, second: i64) -> bool {
        let step = second.div_euclid(self.step_secs);
        if step <= self.now - self.len {
            return false;
        }
        if step <= self.now {
            self.union.update_with_coupon(coupon);
        }
        let lg_k = self.lg_k;
        update(
            self.steps.entry(step).or_insert_with(|| sketch(lg_k)),
            coupon,
        )
    }
}
