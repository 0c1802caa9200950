package registry

import (
	"encoding/binary"
	"hash/maphash"
	"iter"
	"math/bits"
	"net/netip"
	"slices"
)

// trie is a persistent hash array mapped trie (a HAMT): an immutable map
// whose with and without return a new trie that shares every node the
// change did not touch with the old one. A change costs O(log32 n) node
// copies, not a copy of the whole map, and diff finds what changed between
// two versions by skipping the subtrees they share, so its cost follows the
// size of the change, not of the table. This is what keeps a registration's
// cost from growing with the table (issue 14, lever 7).
//
// The zero trie is empty and ready to use.
type trie[K hashable, V comparable] struct {
	root *tnode[K, V]
	n    int
}

// hashable is a key of a trie.
type hashable interface {
	comparable
	hash() uint64
}

// tbits is the number of hash bits that one level of the trie consumes.
const tbits = 5

// tnode is one level: a bitmap of the occupied slots of 32 and the slots
// themselves, dense. Nodes are never modified once shared.
type tnode[K hashable, V comparable] struct {
	bitmap uint32
	slots  []tslot[K, V]
}

// tslot is a child node or a leaf, never both.
type tslot[K hashable, V comparable] struct {
	node *tnode[K, V]
	leaf *tleaf[K, V]
}

// tleaf holds the entries whose keys share one full 64-bit hash: one entry,
// except for a full collision.
type tleaf[K hashable, V comparable] struct {
	hash    uint64
	entries []tentry[K, V]
}

type tentry[K hashable, V comparable] struct {
	key K
	val V
}

// index returns h's slot number at shift.
func index(h uint64, shift uint) uint32 {
	if shift >= 64 {
		return 0
	}
	return uint32(h>>shift) & (1<<tbits - 1)
}

// pos returns the position in n.slots of the slot with bit, and whether
// the slot is occupied.
func (n *tnode[K, V]) pos(bit uint32) (int, bool) {
	return bits.OnesCount32(n.bitmap & (bit - 1)), n.bitmap&bit != 0
}

// Len returns the number of entries.
func (t trie[K, V]) Len() int { return t.n }

// get returns the value of k.
func (t trie[K, V]) get(k K) (V, bool) {
	h := k.hash()
	n := t.root
	for shift := uint(0); n != nil; shift += tbits {
		i, ok := n.pos(1 << index(h, shift))
		if !ok {
			break
		}
		s := &n.slots[i]
		if s.leaf != nil {
			if s.leaf.hash == h {
				for _, e := range s.leaf.entries {
					if e.key == k {
						return e.val, true
					}
				}
			}
			break
		}
		n = s.node
	}
	var zero V
	return zero, false
}

// with returns t with k set to v.
func (t trie[K, V]) with(k K, v V) trie[K, V] {
	root, added := t.root.with(k.hash(), 0, k, v)
	if added {
		t.n++
	}
	t.root = root
	return t
}

// without returns t without k.
func (t trie[K, V]) without(k K) trie[K, V] {
	root, removed := t.root.without(k.hash(), 0, k)
	if !removed {
		return t
	}
	if root != nil && len(root.slots) == 0 {
		root = nil
	}
	t.root, t.n = root, t.n-1
	return t
}

// withSlot returns a copy of n whose slot at position i (bit) is s,
// inserted if the slot was free.
func (n *tnode[K, V]) withSlot(bit uint32, i int, occupied bool, s tslot[K, V]) *tnode[K, V] {
	c := &tnode[K, V]{bitmap: n.bitmap | bit}
	if occupied {
		c.slots = slices.Clone(n.slots)
		c.slots[i] = s
	} else {
		c.slots = make([]tslot[K, V], 0, len(n.slots)+1)
		c.slots = append(c.slots, n.slots[:i]...)
		c.slots = append(c.slots, s)
		c.slots = append(c.slots, n.slots[i:]...)
	}
	return c
}

func (n *tnode[K, V]) with(h uint64, shift uint, k K, v V) (*tnode[K, V], bool) {
	bit := uint32(1) << index(h, shift)
	if n == nil {
		return &tnode[K, V]{bitmap: bit, slots: []tslot[K, V]{{leaf: newLeaf(h, k, v)}}}, true
	}
	i, occupied := n.pos(bit)
	if !occupied {
		return n.withSlot(bit, i, false, tslot[K, V]{leaf: newLeaf(h, k, v)}), true
	}
	s := n.slots[i]
	if s.node != nil {
		child, added := s.node.with(h, shift+tbits, k, v)
		return n.withSlot(bit, i, true, tslot[K, V]{node: child}), added
	}
	if s.leaf.hash == h {
		l := &tleaf[K, V]{hash: h, entries: slices.Clone(s.leaf.entries)}
		added := true
		for j := range l.entries {
			if l.entries[j].key == k {
				l.entries[j].val, added = v, false
			}
		}
		if added {
			l.entries = append(l.entries, tentry[K, V]{k, v})
		}
		return n.withSlot(bit, i, true, tslot[K, V]{leaf: l}), added
	}
	// Two hashes meet in this slot: push both down one level.
	child := &tnode[K, V]{bitmap: 1 << index(s.leaf.hash, shift+tbits), slots: []tslot[K, V]{{leaf: s.leaf}}}
	child, _ = child.with(h, shift+tbits, k, v)
	return n.withSlot(bit, i, true, tslot[K, V]{node: child}), true
}

func newLeaf[K hashable, V comparable](h uint64, k K, v V) *tleaf[K, V] {
	return &tleaf[K, V]{hash: h, entries: []tentry[K, V]{{k, v}}}
}

// without returns n without k (nil when nothing is left) and whether k was
// there. A node left with a single leaf collapses into that leaf in its
// parent, so that one set of keys has one shape.
func (n *tnode[K, V]) without(h uint64, shift uint, k K) (*tnode[K, V], bool) {
	if n == nil {
		return nil, false
	}
	bit := uint32(1) << index(h, shift)
	i, occupied := n.pos(bit)
	if !occupied {
		return n, false
	}
	s := n.slots[i]
	var repl tslot[K, V]
	if s.node != nil {
		child, removed := s.node.without(h, shift+tbits, k)
		if !removed {
			return n, false
		}
		switch {
		case child == nil:
		case len(child.slots) == 1 && child.slots[0].leaf != nil:
			repl.leaf = child.slots[0].leaf
		default:
			repl.node = child
		}
	} else {
		if s.leaf.hash != h {
			return n, false
		}
		j := slices.IndexFunc(s.leaf.entries, func(e tentry[K, V]) bool { return e.key == k })
		if j < 0 {
			return n, false
		}
		if len(s.leaf.entries) > 1 {
			repl.leaf = &tleaf[K, V]{hash: h, entries: slices.Delete(slices.Clone(s.leaf.entries), j, j+1)}
		}
	}
	if repl.node != nil || repl.leaf != nil {
		return n.withSlot(bit, i, true, repl), true
	}
	if len(n.slots) == 1 {
		return nil, true
	}
	c := &tnode[K, V]{bitmap: n.bitmap &^ bit, slots: make([]tslot[K, V], 0, len(n.slots)-1)}
	c.slots = append(c.slots, n.slots[:i]...)
	c.slots = append(c.slots, n.slots[i+1:]...)
	return c, true
}

// All iterates over every entry, in no particular order.
func (t trie[K, V]) All() iter.Seq2[K, V] {
	return func(yield func(K, V) bool) { t.root.each(yield) }
}

func (n *tnode[K, V]) each(yield func(K, V) bool) bool {
	if n == nil {
		return true
	}
	for _, s := range n.slots {
		if s.node != nil {
			if !s.node.each(yield) {
				return false
			}
			continue
		}
		for _, e := range s.leaf.entries {
			if !yield(e.key, e.val) {
				return false
			}
		}
	}
	return true
}

// diff calls fn for every key whose entry differs between a and b: present
// in one only, or with values that are not ==. Subtrees that a and b share
// are skipped, so the cost follows the number of differences (times the
// depth), not the size of the tries.
func diff[K hashable, V comparable](a, b trie[K, V], fn func(k K, av V, inA bool, bv V, inB bool)) {
	diffNodes(a.root, b.root, 0, fn)
}

func diffNodes[K hashable, V comparable](a, b *tnode[K, V], shift uint, fn func(K, V, bool, V, bool)) {
	if a == b {
		return
	}
	var zero V
	if a == nil {
		b.each(func(k K, v V) bool { fn(k, zero, false, v, true); return true })
		return
	}
	if b == nil {
		a.each(func(k K, v V) bool { fn(k, v, true, zero, false); return true })
		return
	}
	for m := a.bitmap | b.bitmap; m != 0; m &= m - 1 {
		bit := m & -m
		var sa, sb tslot[K, V]
		if i, ok := a.pos(bit); ok {
			sa = a.slots[i]
		}
		if i, ok := b.pos(bit); ok {
			sb = b.slots[i]
		}
		switch {
		case sa == sb:
		case sa.leaf != nil && sb.leaf != nil && sa.leaf.hash == sb.leaf.hash:
			diffLeaves(sa.leaf, sb.leaf, fn)
		default:
			diffNodes(sa.asNode(shift+tbits), sb.asNode(shift+tbits), shift+tbits, fn)
		}
	}
}

// asNode returns s as a node of the level at shift: its node, or a node
// holding only its leaf (nil for an empty slot), so that a leaf and a node
// in the same slot of two tries go down together until the leaf meets its
// counterpart. Leaves of different hashes part within 64 bits; leaves of
// the same hash are compared by diffLeaves.
func (s tslot[K, V]) asNode(shift uint) *tnode[K, V] {
	switch {
	case s.node != nil:
		return s.node
	case s.leaf != nil:
		return &tnode[K, V]{bitmap: 1 << index(s.leaf.hash, shift), slots: []tslot[K, V]{s}}
	}
	return nil
}

// diffLeaves compares two leaves entry by entry.
func diffLeaves[K hashable, V comparable](a, b *tleaf[K, V], fn func(K, V, bool, V, bool)) {
	var zero V
	for _, e := range a.entries {
		j := slices.IndexFunc(b.entries, func(f tentry[K, V]) bool { return f.key == e.key })
		switch {
		case j < 0:
			fn(e.key, e.val, true, zero, false)
		case b.entries[j].val != e.val:
			fn(e.key, e.val, true, b.entries[j].val, true)
		}
	}
	for _, f := range b.entries {
		if !slices.ContainsFunc(a.entries, func(e tentry[K, V]) bool { return e.key == f.key }) {
			fn(f.key, zero, false, f.val, true)
		}
	}
}

// seed is the hash seed of every trie of the process; tries are never
// stored, so a per-process seed is fine.
var seed = maphash.MakeSeed()

// hash implements hashable.
func (k Key) hash() uint64 {
	var b [18]byte
	a := k.IP.As16()
	copy(b[:16], a[:])
	binary.BigEndian.PutUint16(b[16:], k.Port)
	return maphash.Bytes(seed, b[:])
}

// addrKey is an IP as a trie key.
type addrKey struct{ netip.Addr }

// hash implements hashable.
func (a addrKey) hash() uint64 {
	b := a.As16()
	return maphash.Bytes(seed, b[:])
}
