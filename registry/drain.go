package registry

import (
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// MaxDrain is the longest drain that DeregisterDrain accepts.
const MaxDrain = time.Hour

// Drain is a deregistered member whose established connections may run on
// until Until. It is gone from its binding, so Lookup never returns it and
// new connections are refused at once; but the table still holds its IP
// (Addrs), so the stack keeps the address and the connections keep
// flowing, and dispatch's Prune spares them. When Until passes, EndDrains
// removes the drain: the stack then releases the address if nothing else
// holds it, and Prune resets the connections that are left.
//
// Drains are not persisted: a gateway restart ends every connection anyway.
type Drain struct {
	// Key is the binding the member left.
	Key Key `json:"binding"`
	// Name is the member's name.
	Name string `json:"name"`
	// Backend is where its connections go.
	Backend netip.AddrPort `json:"backend"`
	// Until is when its remaining connections are closed.
	Until time.Time `json:"until"`
}

// Draining reports whether member name of binding k is draining, and until
// when.
func (t *Table) Draining(k Key, name string) (time.Time, bool) {
	for _, d := range t.drains {
		if d.Key == k && d.Name == name {
			return d.Until, true
		}
	}
	return time.Time{}, false
}

// MemberOrDraining reports whether name is a member of binding k, or a
// member that left it and is draining: whether the table still accounts
// for connections to it.
func (t *Table) MemberOrDraining(k Key, name string) bool {
	if b, ok := t.bindings.get(k); ok && b.Has(name) {
		return true
	}
	_, draining := t.Draining(k, name)
	return draining
}

// Drains returns the members that are draining, ordered by deadline.
func (t *Table) Drains() []Drain {
	out := slices.Clone(t.drains)
	slices.SortFunc(out, func(a, b Drain) int { return a.Until.Compare(b.Until) })
	return out
}

// dropDrain removes the drain of (k, name), if any, from t (a copy being
// built by update).
func (t *Table) dropDrain(k Key, name string) {
	t.deleteDrains(func(d Drain) bool { return d.Key == k && d.Name == name })
}

// DeregisterDrain is Deregister with a grace period: the member stops
// receiving new connections at once, and its established connections may
// run for up to drain before the gateway closes them (see Drain). A drain
// of 0 is Deregister. Registering the member again before the drain ends
// cancels it.
func (r *Registry) DeregisterDrain(name string, k Key, drain time.Duration) error {
	if drain < 0 || drain > MaxDrain {
		return Invalid("drain", "%v is outside 0..%v", drain, MaxDrain)
	}
	if err := ValidateName(name); err != nil {
		return err
	}
	return r.update(func(t *Table) error {
		old, i, err := t.member(k, name, "name")
		if err != nil {
			return fmt.Errorf("deregister %s: %w", name, err)
		}
		m := old.Members[i]
		b := cloneBinding(k, old)
		b.Members = slices.Delete(b.Members, i, i+1)
		if len(b.Members) == 0 {
			t.del(k)
		} else {
			t.set(b)
		}
		t.dropDrain(k, name)
		if drain > 0 {
			t.addDrain(Drain{Key: k, Name: name, Backend: m.Backend, Until: r.now().Add(drain)})
		}
		return nil
	})
}

// EndDrains ends the drains whose deadline has passed and returns how
// many it ended. RunExpiry calls it on every tick.
func (r *Registry) EndDrains() int {
	n := 0
	err := r.updateAuto(func(t *Table) error {
		n = 0 // fn may run twice (see buildLocked)
		now := r.now()
		t.deleteDrains(func(d Drain) bool {
			if now.Before(d.Until) {
				return false
			}
			n++
			r.log.Info("drain ended: closing the member's remaining connections", "binding", d.Key, "member", d.Name)
			return true
		})
		if n == 0 {
			return errNoChange
		}
		return nil
	})
	if err != nil {
		r.log.Error("end drains", "err", err)
		return 0
	}
	return n
}

// MembersLeft reports whether some member that prev routes or drains is in
// next neither a member nor draining: the change took connections away
// from it. Bindings that the change did not touch are shared between the
// two tables and skipped, so a renewal or a health report costs only its
// own binding.
func MembersLeft(prev, next *Table) bool {
	gone := func(k Key, name string) bool { return !next.MemberOrDraining(k, name) }
	left := false
	diff(prev.bindings, next.bindings, func(k Key, b *Binding, inPrev bool, _ *Binding, _ bool) {
		if left || !inPrev {
			return
		}
		for _, m := range b.Members {
			if gone(k, m.Name) {
				left = true
				return
			}
		}
	})
	if left {
		return true
	}
	for _, d := range prev.drains {
		if gone(d.Key, d.Name) {
			return true
		}
	}
	return false
}
