package registry

import (
	"errors"
	"fmt"
	"slices"
)

// memberChange is a journal record of one member of a binding that the
// journal line does not carry whole: Member replaces the member of that
// name (in place) or joins the binding (at its end); Gone removes the
// member of that name. A change of one member of a port with 1,000
// members thus costs one member's bytes, not the binding's.
type memberChange struct {
	// Binding is the binding's key.
	Binding Key `json:"binding"`
	// Member is the member as it now stands; nil when Gone is set.
	Member *Member `json:"member,omitempty"`
	// Gone is the name of a member that left.
	Gone string `json:"gone,omitempty"`
}

// record adds to e the change of binding k from a (inOld) to b (inNew):
// the binding whole when it is new, its key when it is gone, otherwise
// the members that changed, unless they are as many as the binding's
// members or their order changed (then the binding whole).
func (e *journalEntry) record(k Key, a *Binding, inOld bool, b *Binding, inNew bool) {
	switch {
	case !inNew:
		e.Del = append(e.Del, k)
	case !inOld:
		e.Set = append(e.Set, *b)
	default:
		if ms, ok := memberChanges(a, b); ok {
			e.Members = append(e.Members, ms...)
		} else {
			e.Set = append(e.Set, *b)
		}
	}
}

// memberChanges returns the member records that make b of a, if b is a's
// members in a's order, some gone and some changed, followed by new ones,
// and the records are fewer than b's members.
func memberChanges(a, b *Binding) ([]memberChange, bool) {
	var gone, set []memberChange
	j := 0
	for i := range a.Members {
		m := &a.Members[i]
		if j < len(b.Members) && b.Members[j].Name == m.Name {
			if b.Members[j] != *m {
				set = append(set, memberChange{Binding: b.Key, Member: &b.Members[j]})
			}
			j++
			continue
		}
		gone = append(gone, memberChange{Binding: b.Key, Gone: m.Name})
	}
	for ; j < len(b.Members); j++ {
		if a.Has(b.Members[j].Name) { // moved: not expressible
			return nil, false
		}
		set = append(set, memberChange{Binding: b.Key, Member: &b.Members[j]})
	}
	if len(gone)+len(set) >= len(b.Members) {
		return nil, false
	}
	return append(gone, set...), true
}

// apply applies the journal entry e to t, a table being restored: Set,
// then Del, then Members in order. A member record of a binding or a
// member that t lacks is damage.
func (e *journalEntry) apply(t *Table) error {
	for i := range e.Set {
		t.set(&e.Set[i])
	}
	for _, k := range e.Del {
		t.del(k)
	}
	// Each binding is copied once per entry, however many of its members
	// the entry changes.
	copied := map[Key]*Binding{}
	for _, c := range e.Members {
		b, ok := copied[c.Binding]
		if !ok {
			old, found := t.bindings.get(c.Binding)
			if !found {
				return fmt.Errorf("member record of binding %s, which does not exist", c.Binding)
			}
			b = cloneBinding(c.Binding, old)
			copied[c.Binding] = b
		}
		switch {
		case c.Member != nil && c.Gone == "":
			if i := b.index(c.Member.Name); i >= 0 {
				b.Members[i] = *c.Member
			} else {
				b.Members = append(b.Members, *c.Member)
			}
		case c.Member == nil && c.Gone != "":
			i := b.index(c.Gone)
			if i < 0 {
				return fmt.Errorf("binding %s: member %q left, but it is not there", c.Binding, c.Gone)
			}
			b.Members = slices.Delete(b.Members, i, i+1)
		default:
			return errors.New("a member record has both or neither of member and gone")
		}
	}
	for _, b := range copied {
		if len(b.Members) == 0 {
			t.del(b.Key)
		} else {
			t.set(b)
		}
	}
	return nil
}
