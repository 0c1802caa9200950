package registry

import "fmt"

// Maintenance (issue 15 point 8), as HAProxy's `set server state maint`:
// a member in maintenance stays registered and visible, takes no new
// connection, and keeps its established ones. An active member in
// maintenance hands its port to the first healthy standby (failover).

// DownMaint is the DownCause of a member in maintenance (SetMaint): only
// SetMaint(…, false) brings it up. Health reports and registrations
// leave it down; a lease that runs out meanwhile ends it as Expire ends
// every lease (DownLease), and a renewal then brings the member up.
const DownMaint DownCause = "maint"

// CauseMaint: an operator put the member in maintenance, or took it out
// (SetMaint).
const CauseMaint ChangeCause = "maint"

// reasonMaint is the Reason of a member in maintenance.
const reasonMaint = "maintenance"

// SetMaint puts member name in maintenance (on) or takes it out (off) in
// every binding it belongs to or, with port other than 0, only in the
// bindings of that port. It returns the bindings it changed or found
// already as asked, sorted; the member must be in at least one, or the
// error is ErrNotFound naming "name" (or "port").
//
// In maintenance, the member is down (DownMaint): Lookup no longer
// returns it, so new connections go to the standby that failover
// promotes (mode 2) or are refused (mode 1, or no healthy standby),
// while established ones go on: no member left, so dispatch prunes
// nothing. Out of it, the member is up again; it is a standby if it was
// failed over from, unless [health] failback brings it back as active.
func (r *Registry) SetMaint(name string, port uint16, on bool) ([]Binding, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	var out []Binding
	err := r.update(func(t *Table) error {
		out = out[:0]
		now := r.now()
		changed := false
		// The bindings are collected first: the loop changes t.
		var mine []*Binding
		for k, b := range t.bindings.All() {
			if b.Has(name) && (port == 0 || k.Port == port) {
				mine = append(mine, b)
			}
		}
		for _, old := range mine {
			k, i := old.Key, old.index(name)
			cur := old.Members[i]
			if on == (cur.Down && cur.DownCause == DownMaint) {
				out = append(out, old.clone()) // already as asked
				continue
			}
			b := cloneBinding(k, old)
			m := &b.Members[i]
			if on {
				m.Down, m.DownCause, m.Since, m.Cause, m.Reason = true, DownMaint, now, CauseMaint, reasonMaint
				r.eventLocked(Event{Time: now, Binding: k, Member: name, What: "down", Why: reasonMaint, Cause: CauseMaint})
			} else {
				m.Down, m.DownCause, m.Since, m.Cause, m.Reason = false, DownNone, now, CauseMaint, "out of maintenance"
				r.eventLocked(Event{Time: now, Binding: k, Member: name, What: "up", Why: "out of maintenance", Cause: CauseMaint})
				if m.FailedOver && r.opts.Failback {
					for j := range b.Members {
						if o := &b.Members[j]; o.State == Active {
							o.State, o.Since, o.Cause, o.Reason = Standby, now, CauseFailback, "failback to "+name
						}
					}
					m.State, m.FailedOver, m.Cause, m.Reason = Active, false, CauseFailback, "failback: out of maintenance"
					r.eventLocked(Event{Time: now, Binding: k, Member: name, What: "promoted", Why: "failback", Cause: CauseFailback})
				}
			}
			r.failover(b, now)
			t.set(b)
			out = append(out, b.clone())
			changed = true
		}
		if len(out) == 0 {
			if port != 0 {
				return fieldErr(ErrNotFound, "port", "%s is not registered on port %d", name, port)
			}
			return fieldErr(ErrNotFound, "name", "%s is not registered", name)
		}
		if !changed {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		what := "ready"
		if on {
			what = "maint"
		}
		return nil, fmt.Errorf("%s %s: %w", what, name, err)
	}
	ptrs := make([]*Binding, len(out))
	for i := range out {
		ptrs[i] = &out[i]
	}
	sortBindings(ptrs)
	sorted := make([]Binding, len(ptrs))
	for i, b := range ptrs {
		sorted[i] = *b
	}
	return sorted, nil
}
