package registry

// Changed returns the bindings of next that the change from prev added or
// replaced, in no particular order. Bindings that the change did not touch
// are shared between the two tables and skipped, so a renewal or a health
// report costs one map lookup per binding and returns only its own
// binding. Watchers (see Registry.Watch) use it to look at what changed
// without walking or sorting the whole table.
func Changed(prev, next *Table) []*Binding {
	var out []*Binding
	for k, b := range next.bindings {
		if prev.bindings[k] != b {
			out = append(out, b)
		}
	}
	return out
}
