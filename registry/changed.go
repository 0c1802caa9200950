package registry

// Changed returns the bindings of next that the change from prev added or
// replaced, in no particular order. Bindings that the change did not touch
// are shared between the two tables and skipped without being looked at,
// so the cost follows the size of the change, not of the table. Watchers (see Registry.Watch) use it to look at what changed
// without walking or sorting the whole table.
func Changed(prev, next *Table) []*Binding {
	var out []*Binding
	diff(prev.bindings, next.bindings, func(_ Key, _ *Binding, _ bool, b *Binding, inNext bool) {
		if inNext {
			out = append(out, b)
		}
	})
	return out
}

// Removed returns the bindings of prev that next no longer has, in no
// particular order, at the cost of the change, as Changed. The event
// stream (control's GET /v1/events) uses it to report the members that
// left with their binding.
func Removed(prev, next *Table) []*Binding {
	var out []*Binding
	diff(prev.bindings, next.bindings, func(_ Key, a *Binding, inPrev bool, _ *Binding, inNext bool) {
		if inPrev && !inNext {
			out = append(out, a)
		}
	})
	return out
}
