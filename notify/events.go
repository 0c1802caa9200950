package notify

import (
	"slices"
	"time"

	"github.com/vipmux/vipmux/registry"
)

// Events returns the events of the change from prev to next, those of
// changed bindings in key order, then those of removed ones: a new active member (failover, failback or switch, by the new
// active's Cause), members marked down by their lease or their health
// check, members brought up again by their health check, and mode-1
// members whose lease ran out (their binding is gone and its lease had
// passed at now; a deregistration is no event). Give it the tables that
// registry.Watch passes: they are published, so every event happened.
func Events(prev, next *registry.Table, now time.Time) []Event {
	var out []Event
	changed := registry.Changed(prev, next)
	slices.SortFunc(changed, func(a, b *registry.Binding) int { return compareKeys(a.Key, b.Key) })
	for _, b := range changed {
		pb, ok := prev.Binding(b.Key)
		if !ok {
			continue // new: a registration is no event
		}
		key := b.Key.String()
		if to, ok := b.Active(); ok {
			if from, ok := pb.Active(); ok && from.Name != to.Name {
				kind := Switch
				switch to.Cause {
				case registry.CauseFailover:
					kind = Failover
				case registry.CauseFailback:
					kind = Failback
				}
				out = append(out, Event{Time: now, Kind: kind, Binding: key, Member: to.Name, From: from.Name, Why: to.Reason})
			}
		}
		for _, m := range b.Members {
			pm, ok := pb.Member(m.Name)
			if !ok {
				continue
			}
			switch {
			case !pm.Down && m.Down && m.DownCause == registry.DownLease:
				out = append(out, Event{Time: now, Kind: LeaseExpired, Binding: key, Member: m.Name, Why: m.Reason})
			case !pm.Down && m.Down && m.DownCause == registry.DownHealth:
				out = append(out, Event{Time: now, Kind: HealthDown, Binding: key, Member: m.Name, Why: m.Reason})
			case pm.Down && pm.DownCause == registry.DownHealth && !m.Down:
				out = append(out, Event{Time: now, Kind: HealthUp, Binding: key, Member: m.Name, Why: m.Reason})
			}
		}
	}
	removed := registry.Removed(prev, next)
	slices.SortFunc(removed, func(a, b *registry.Binding) int { return compareKeys(a.Key, b.Key) })
	for _, b := range removed {
		for _, m := range b.Members {
			if m.TTL > 0 && !m.Expires.After(now) {
				out = append(out, Event{Time: now, Kind: LeaseExpired, Binding: b.Key.String(), Member: m.Name, Why: "lease expired: address released"})
			}
		}
	}
	return out
}

func compareKeys(a, b registry.Key) int {
	if c := a.IP.Compare(b.IP); c != 0 {
		return c
	}
	return int(a.Port) - int(b.Port)
}
