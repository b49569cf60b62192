//! Point-to-point: the WMS's batch files, the ERP's imports and order downloads, and the
//! storefront connector that polls the ERP and writes what changed since its own last write.
//! Redelivered (retried) imports and writes land here too.

use super::actions::{Action, Write};
use super::{ERP, ExportFile, MIN, NLOC, SHOP, World};
use crate::config::CASE;

impl World {
    pub(super) fn export(&mut self) {
        let values: Vec<(usize, i64)> = std::mem::take(&mut self.changed)
            .into_iter()
            .map(|c| (c, self.wms[c]))
            .collect();
        let closed = std::mem::take(&mut self.closed);
        self.files.push(ExportFile {
            at: self.now,
            values,
            closed,
        });
        let next = self.next_export_after(self.now);
        self.at(next, Action::Export);
    }

    pub(super) fn import(&mut self, retry_of: Option<usize>) {
        if let Some(k) = retry_of {
            self.import_file(k);
            return;
        }
        let every = i64::from(self.p.faults.import_every_min) * MIN;
        self.at(self.now + every, Action::Import { retry_of: None });
        let mut landed = false;
        while self.imported < self.files.len() {
            let k = self.imported;
            self.imported += 1;
            self.import_file(k);
            landed = true;
        }
        // A message from an earlier run that timed out is redelivered after the newer file.
        if landed && self.imported >= 2 && self.rng_fault.chance(self.p.faults.retry_rate) {
            let max = i64::from(self.p.faults.retry_max_delay_min) * MIN;
            let d = self.rng_lat.range(MIN, max.max(30 * MIN));
            let k = self.imported - 2;
            self.at(self.now + d, Action::Import { retry_of: Some(k) });
        }
    }

    pub(super) fn import_file(&mut self, k: usize) {
        let file = self.files[k].clone();
        for (c, w) in &file.values {
            let (c, w) = (*c, *w);
            let sku = c / NLOC;
            // The mis-mapped import reads the file's case count as eaches.
            let v = if self.mismapped[sku] { w / CASE } else { w };
            let m = &mut self.erp_meta[c];
            m.src = file.at;
            m.w_src = w;
            if file.at >= m.max_src {
                m.max_src = file.at;
                m.w_max = w;
            }
            if self.erp_on[c] != v {
                self.erp_on[c] = v;
                self.log(
                    ERP,
                    sku,
                    Some(c % NLOC),
                    v,
                    "wms-sync",
                    Some(file.at),
                    format!("wms file {k}"),
                );
            }
        }
        for id in &file.closed {
            let o = &mut self.orders[*id];
            if !o.erp_closed {
                o.erp_closed = true;
                let (cell, units) = (o.sku * NLOC + o.loc, o.units);
                // The WMS's file closed the order line: the ERP releases its commitment.
                self.erp_commit(
                    cell,
                    -units,
                    "wms-sync",
                    Some(file.at),
                    format!("close SO-{id}"),
                );
            }
        }
    }

    pub(super) fn order_sync(&mut self) {
        let every = i64::from(self.p.faults.order_sync_min) * MIN;
        self.at(self.now + every, Action::OrderSync);
        for id in std::mem::take(&mut self.placed) {
            let sku = self.orders[id].sku;
            let loc = self.best_location(sku).0;
            let o = &mut self.orders[id];
            o.loc = loc;
            let units = o.units;
            // The downloaded storefront order commits stock in the ERP.
            self.erp_commit(
                sku * NLOC + loc,
                units,
                "checkout",
                None,
                format!("SO-{id}"),
            );
            self.released[loc].push(id);
        }
    }

    pub(super) fn erp_sums(&self, sku: usize) -> (i64, i64) {
        let mut on = 0;
        let mut com = 0;
        for l in 0..NLOC {
            on += self.erp_on[sku * NLOC + l];
            com += self.erp_com[sku * NLOC + l];
        }
        (on, com)
    }

    pub(super) fn poll(&mut self) {
        let f = &self.p.faults;
        let every = i64::from(f.poll_every_min.max(1)) * MIN;
        self.at(self.now + every, Action::Poll);
        for sku in 0..self.p.skus {
            let (on, com) = self.erp_sums(sku);
            // The partial mapping sends on-hand where available belongs.
            let value = if self.phantom[sku] {
                self.q(sku, on)
            } else {
                self.q(sku, on - com)
            };
            // The connector writes only what changed since its own last write; a hand edit in
            // between therefore survives until the ERP's number moves.
            let correct = self.q(sku, on - com);
            if self.last2[sku] != Some(correct) {
                self.last2[sku] = Some(correct);
                self.sh2[sku] = correct;
            }
            if self.conn_last[sku] == Some(value) {
                continue;
            }
            self.sh1[sku] = value;
            self.conn_last[sku] = Some(value);
            let w = Write {
                sku,
                value,
                src: self.now,
            };
            self.shop_write(w);
            if self.rng_fault.chance(self.p.faults.retry_rate) {
                let max = i64::from(self.p.faults.retry_max_delay_min) * MIN;
                let d = self.rng_lat.range(every + MIN, every + max.max(MIN));
                self.at(self.now + d, Action::ShopWrite(w));
            }
        }
    }

    pub(super) fn shop_write(&mut self, w: Write) {
        self.shop_meta[w.sku].person = false;
        if self.shop[w.sku] != w.value {
            self.shop[w.sku] = w.value;
            self.log(
                SHOP,
                w.sku,
                None,
                w.value,
                "erp-sync",
                Some(w.src),
                "poll".into(),
            );
        }
    }
}
