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
