package registry

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// collKey is a trie key whose hash the test chooses, to force partial and
// full hash collisions.
type collKey struct {
	ID int
	H  uint64
}

func (k collKey) hash() uint64 { return k.H }

// change is one difference that diff reported.
type change struct {
	Key      collKey
	Old, New int
	InA, InB bool
}

// TestTrieAgainstMap applies random sets and deletes to a trie and to a Go
// map and checks after each step that they hold the same entries, that the
// old version is unchanged, and that diff between the two versions reports
// exactly the entry that changed. The hash families make keys share a slot
// at some levels (low bits equal) or collide completely.
func TestTrieAgainstMap(t *testing.T) {
	families := []struct {
		name string
		hash func(id int) uint64
	}{
		{"spread", func(id int) uint64 { return uint64(id) * 0x9e3779b97f4a7c15 }},
		{"same low 40 bits", func(id int) uint64 { return uint64(id)<<40 | 0xabcdef }},
		{"same top bits only differ", func(id int) uint64 { return uint64(id%4)<<62 | 7 }},
		{"full collisions", func(id int) uint64 { return uint64(id % 3) }},
	}
	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			var tr trie[collKey, int]
			ref := map[collKey]int{}
			for step := range 2000 {
				k := collKey{ID: rng.IntN(100)}
				k.H = fam.hash(k.ID)
				prev, prevRef := tr, maps.Clone(ref)
				var want []change
				if rng.IntN(3) == 0 {
					tr = tr.without(k)
					if old, ok := ref[k]; ok {
						want = append(want, change{k, old, 0, true, false})
						delete(ref, k)
					}
				} else {
					v := step + 1
					tr = tr.with(k, v)
					old, ok := ref[k]
					want = append(want, change{k, old, v, ok, true})
					ref[k] = v
				}
				if got := entries(tr); !maps.Equal(ref, got) {
					t.Fatalf("step %d: trie differs from map (-want +got):\n%s", step, cmp.Diff(ref, got))
				}
				if got := entries(prev); !maps.Equal(prevRef, got) {
					t.Fatalf("step %d: the old version changed (-want +got):\n%s", step, cmp.Diff(prevRef, got))
				}
				for k, v := range ref {
					if got, ok := tr.get(k); !ok || got != v {
						t.Fatalf("step %d: get(%v) = %d, %v; want %d, true", step, k, got, ok, v)
					}
				}
				var got []change
				diff(prev, tr, func(k collKey, av int, inA bool, bv int, inB bool) {
					got = append(got, change{k, av, bv, inA, inB})
				})
				if d := cmp.Diff(want, got); d != "" {
					t.Fatalf("step %d: diff(prev, next) (-want +got):\n%s", step, d)
				}
			}
		})
	}
}

func entries(tr trie[collKey, int]) map[collKey]int {
	out := map[collKey]int{}
	for k, v := range tr.All() {
		out[k] = v
	}
	if len(out) != tr.Len() {
		panic(fmt.Sprintf("Len() = %d, All() yields %d", tr.Len(), len(out)))
	}
	return out
}

// TestTrieDiffUnrelated diffs two tries built independently (no shared
// nodes) with overlapping keys.
func TestTrieDiffUnrelated(t *testing.T) {
	var a, b trie[Key, int]
	for i := range 300 {
		k := Key{IP: netip.AddrFrom4([4]byte{198, 18, byte(i >> 8), byte(i)})}
		if i < 200 {
			a = a.with(k, i)
		}
		if i >= 100 {
			b = b.with(k, i+i%2) // odd values differ
		}
	}
	var onlyA, onlyB, changed int
	diff(a, b, func(_ Key, _ int, inA bool, _ int, inB bool) {
		switch {
		case inA && !inB:
			onlyA++
		case inB && !inA:
			onlyB++
		default:
			changed++
		}
	})
	if onlyA != 100 || onlyB != 100 || changed != 50 {
		t.Errorf("diff() = %d only in a, %d only in b, %d changed; want 100, 100, 50", onlyA, onlyB, changed)
	}
}

// TestChangeCostDoesNotGrow measures what one registration costs, in
// bytes allocated, with the journal save (FileStore) and an applier that
// diffs addresses as the stack does, in a table of 100 bindings and in one
// of 10,000; and checks that Changed and AddrDiff of one registration
// find just it. Before the table was a persistent trie, each change copied
// the whole table and the applier built its address set (issue 14: 3 ms
// per registration at 10,000).
func TestChangeCostDoesNotGrow(t *testing.T) {
	cost := func(n int) (bytes uint64, changed, addrs int) {
		st := &FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
		r, err := New(Options{Networks: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")}, Store: st})
		if err != nil {
			t.Fatal(err)
		}
		if err := r.SetApplier(diffApplier{}); err != nil {
			t.Fatal(err)
		}
		regs := make([]Registration, n)
		for i := range regs {
			regs[i] = Registration{Name: fmt.Sprintf("s%d", i), IP: ipN(i), Backend: beA}
		}
		if _, err := r.RegisterBatch(regs); err != nil {
			t.Fatalf("RegisterBatch(%d) = %v", n, err)
		}
		// The first save after a batch may compact; measure later ones.
		if _, err := r.Register(Registration{Name: "w", IP: ipN(n), Backend: beA}); err != nil {
			t.Fatal(err)
		}
		const runs = 50
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i := range runs {
			if _, err := r.Register(Registration{Name: "x", IP: ipN(n + 1 + i), Backend: beA}); err != nil {
				t.Fatal(err)
			}
		}
		runtime.ReadMemStats(&after)
		prev := r.Table()
		if _, err := r.Register(Registration{Name: "y", IP: ipN(n + 1 + runs), Backend: beA}); err != nil {
			t.Fatal(err)
		}
		next := r.Table()
		return (after.TotalAlloc - before.TotalAlloc) / runs, len(Changed(prev, next)), len(AddrDiff(next, prev))
	}
	smallBytes, smallChanged, smallAddrs := cost(100)
	bigBytes, bigChanged, bigAddrs := cost(10000)
	if smallChanged != 1 || bigChanged != 1 || smallAddrs != 1 || bigAddrs != 1 {
		t.Errorf("Changed/AddrDiff of one registration = %d/%d bindings/addresses at 100, %d/%d at 10,000; want 1/1", smallChanged, smallAddrs, bigChanged, bigAddrs)
	}
	// One trie level more at 10,000 (log32 n) is a few small node copies;
	// a copy of the table would be hundreds of KiB.
	if bigBytes > 2*smallBytes {
		t.Errorf("one Register allocates %d bytes at 10,000 bindings, %d at 100: the cost grows with the table", bigBytes, smallBytes)
	}
	t.Logf("bytes allocated per Register: %d at 100 bindings, %d at 10,000", smallBytes, bigBytes)
}

// diffApplier does what the stack does with a change: find the addresses
// to add and to release.
type diffApplier struct{}

func (diffApplier) Prepare(prev, next *Table) error { _ = AddrDiff(next, prev); return nil }
func (diffApplier) Commit(prev, next *Table)        { _ = AddrDiff(prev, next) }

// ipN returns the i-th address of 198.18.0.0/15 after 198.18.1.0.
func ipN(i int) netip.Addr {
	v := 198<<24 | 18<<16 | 1<<8 + uint32(i)
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// BenchmarkLookup is the per-SYN lookup in a table of 10,000 mode-1
// bindings and one mode-2 binding: an exact hit, a fall-back to the
// every-port binding, and a miss.
func BenchmarkLookup(b *testing.B) {
	r, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	regs := make([]Registration, 10000)
	for i := range regs {
		regs[i] = Registration{Name: fmt.Sprintf("s%d", i), IP: ipN(i), Backend: beA}
	}
	regs = append(regs, Registration{Name: "m2", IP: ipN(5), Port: 80, Backend: beA})
	if _, err := r.RegisterBatch(regs); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		ip   netip.Addr
		port uint16
		ok   bool
	}{
		{"exact", ipN(5), 80, true},
		{"every port", ipN(777), 443, true},
		{"miss", netip.MustParseAddr("198.19.9.9"), 80, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, ok := r.Lookup(c.ip, c.port); ok != c.ok {
					b.Fatalf("Lookup(%s, %d) ok = %v", c.ip, c.port, ok)
				}
			}
		})
	}
}
