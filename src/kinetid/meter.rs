//! A plausible electric meter for the emulator: mains voltage and frequency
//! that drift, an appliance profile with about 1 % noise, power 0 W while the
//! relay is off, and energy that only grows.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What is plugged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Appliance {
    /// ~1430 W resistive.
    Kettle,
    /// 750-1380 W while running, 2 W standby.
    Microwave,
    /// Compressor cycling between 0 and ~114 W.
    Fridge,
    /// 50-65 W switch-mode supply.
    Laptop,
    /// 50-200 W on, 0.5-3 W standby.
    Tv,
    /// 1200-2000 W resistive.
    Heater,
}

/// Mains grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Mains {
    /// 230 V / 50 Hz.
    Eu,
    /// 120 V / 60 Hz.
    Us,
}

impl Mains {
    /// Nominal volts.
    pub fn volts(self) -> f64 {
        match self {
            Mains::Eu => 230.0,
            Mains::Us => 120.0,
        }
    }
    /// Nominal hertz.
    pub fn hertz(self) -> f64 {
        match self {
            Mains::Eu => 50.0,
            Mains::Us => 60.0,
        }
    }
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Watts.
    pub power_w: f64,
    /// Volts RMS.
    pub voltage_v: f64,
    /// Amps RMS.
    pub current_a: f64,
    /// Power factor.
    pub pf: f64,
    /// Hertz.
    pub freq_hz: f64,
    /// Energy counter, Wh.
    pub energy_wh: f64,
}

/// The meter state.
#[derive(Debug, Clone)]
pub struct Meter {
    rng: StdRng,
    appliance: Appliance,
    mains: Mains,
    volts: f64,
    energy_wh: f64,
    t: f64,
    level: f64,
}

fn round(x: f64, places: i32) -> f64 {
    let m = 10f64.powi(places);
    (x * m).round() / m
}

impl Meter {
    /// A meter with its own seeded randomness.
    pub fn new(appliance: Appliance, mains: Mains, seed: u64) -> Meter {
        let mut rng = StdRng::seed_from_u64(seed);
        let level = rng.gen_range(0.0..1.0);
        let energy_wh = round(rng.gen_range(0.0..50_000.0), 1);
        Meter {
            rng,
            appliance,
            mains,
            volts: mains.volts(),
            energy_wh,
            t: 0.0,
            level,
        }
    }

    /// Energy so far.
    pub fn energy_wh(&self) -> f64 {
        self.energy_wh
    }

    fn load(&mut self, on: bool) -> (f64, f64) {
        if !on {
            return (0.0, 1.0);
        }
        let t = self.t;
        let (p, pf) = match self.appliance {
            Appliance::Kettle => (1430.0, 1.0),
            Appliance::Heater => (1200.0 + 800.0 * self.level, 1.0),
            Appliance::Fridge => {
                // About 20 minutes of each 45 running.
                if (t / 60.0) % 45.0 < 20.0 {
                    (114.0, 0.8)
                } else {
                    (0.0, 1.0)
                }
            }
            Appliance::Laptop => (50.0 + 15.0 * self.level, 0.6),
            Appliance::Tv => {
                if (t / 3600.0) % 5.0 < 3.0 {
                    (50.0 + 150.0 * self.level, 0.65)
                } else {
                    (0.5 + 2.5 * self.level, 0.5)
                }
            }
            Appliance::Microwave => {
                if (t / 60.0) % 30.0 < 3.0 {
                    (750.0 + 630.0 * self.level, 0.9)
                } else {
                    (2.0, 0.55)
                }
            }
        };
        let noise = if p > 0.0 {
            1.0 + self.rng.gen_range(-0.01..0.01)
        } else {
            1.0
        };
        (p * noise, pf)
    }

    /// Advance by `dt` seconds and read. Energy integrates power over `dt`.
    pub fn read(&mut self, dt: f64, on: bool) -> Reading {
        self.t += dt;
        let nominal = self.mains.volts();
        // A slow random walk held within +-2 %.
        self.volts = (self.volts + self.rng.gen_range(-0.004..0.004) * nominal)
            .clamp(nominal * 0.98, nominal * 1.02);
        let freq = self.mains.hertz() + self.rng.gen_range(-0.05..0.05);
        let (power, pf) = self.load(on);
        self.energy_wh += power * dt / 3600.0;
        let current = if power > 0.0 {
            power / (self.volts * pf)
        } else {
            0.0
        };
        Reading {
            power_w: round(power, 1),
            voltage_v: round(self.volts, 1),
            current_a: round(current, 3),
            pf: round(pf, 2),
            freq_hz: round(freq, 2),
            energy_wh: round(self.energy_wh, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_is_zero_and_energy_only_grows() {
        let mut m = Meter::new(Appliance::Kettle, Mains::Eu, 1);
        let mut last = m.energy_wh();
        for i in 0..500 {
            let on = i % 7 != 0;
            let r = m.read(60.0, on);
            assert!(r.energy_wh >= last);
            last = r.energy_wh;
            if !on {
                assert_eq!(r.power_w, 0.0);
                assert_eq!(r.current_a, 0.0);
            } else {
                assert!((1410.0..1450.0).contains(&r.power_w), "{r:?}");
            }
            assert!((225.0..=235.0).contains(&r.voltage_v));
            assert!((49.94..=50.06).contains(&r.freq_hz));
        }
    }

    #[test]
    fn seeded_is_reproducible() {
        let mut a = Meter::new(Appliance::Tv, Mains::Us, 9);
        let mut b = Meter::new(Appliance::Tv, Mains::Us, 9);
        for _ in 0..50 {
            assert_eq!(a.read(60.0, true), b.read(60.0, true));
        }
    }
}
