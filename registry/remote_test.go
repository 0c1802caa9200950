package registry

import (
	"errors"
	"net/netip"
	"sync"
	"testing"
)

// fakeRemote is a shared table in memory: Commit checks and applies the
// edits as etcdstore does (per binding, against the revision of the
// view), and feeds the registry the committed change through ApplyRemote
// as a watch would. before, if set, runs at the start of each Commit: a
// concurrent writer.
type fakeRemote struct {
	mu      sync.Mutex
	reg     *Registry
	rev     int64
	modRev  map[Key]int64
	commits int
	before  func(f *fakeRemote)
}

func (f *fakeRemote) Load() (*Table, error) { return nil, nil }
func (f *fakeRemote) Save(*Table) error     { return errors.New("Save called on a Remote") }

func (f *fakeRemote) Commit(rev int64, edits []Edit) (int64, error) {
	if f.before != nil {
		f.before(f)
	}
	f.mu.Lock()
	f.commits++
	for _, e := range edits {
		if f.modRev[e.Key] > rev {
			at := f.rev
			f.mu.Unlock()
			return at, ErrStale
		}
	}
	f.rev++
	at := f.rev
	var set []*Binding
	var del []Key
	for _, e := range edits {
		f.modRev[e.Key] = at
		if e.New == nil {
			del = append(del, e.Key)
		} else {
			set = append(set, e.New)
		}
	}
	f.mu.Unlock()
	go f.reg.ApplyRemote(at, set, del) // the watch runs on its own goroutine
	return at, nil
}

// write commits a change as another gateway would.
func (f *fakeRemote) write(b *Binding) {
	f.mu.Lock()
	f.rev++
	at := f.rev
	f.modRev[b.Key] = at
	f.mu.Unlock()
	f.reg.ApplyRemote(at, []*Binding{b}, nil)
}

func newRemote(t *testing.T) (*Registry, *fakeRemote) {
	t.Helper()
	f := &fakeRemote{modRev: map[Key]int64{}}
	r, err := New(Options{Store: f})
	if err != nil {
		t.Fatal(err)
	}
	f.reg = r
	return r, f
}

func TestRemoteRetry(t *testing.T) {
	ip := netip.MustParseAddr("198.18.0.10")
	be := netip.MustParseAddrPort("198.19.0.10:80")
	k := Key{IP: ip, Port: 80}
	other := &Binding{Key: k, Members: []Member{{Name: "web-x", Backend: be, State: Active}}}
	tests := []struct {
		name string
		// conflicts is how many Commits another writer races.
		conflicts   int
		wantErr     error
		wantMembers []string
		wantCommits int
	}{
		{name: "no race", wantMembers: []string{"web-a"}, wantCommits: 1},
		{name: "one race: re-read and retry", conflicts: 1, wantMembers: []string{"web-x", "web-a"}, wantCommits: 2},
		{name: "races every time: 409", conflicts: RemoteTries, wantErr: ErrConflict, wantMembers: []string{"web-x"}, wantCommits: RemoteTries},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, f := newRemote(t)
			n := 0
			f.before = func(f *fakeRemote) {
				if n < tc.conflicts {
					n++
					b := *other
					b.Members = append([]Member(nil), other.Members...)
					f.write(&b)
				}
			}
			_, err := r.Register(Registration{Name: "web-a", IP: ip, Port: 80, Backend: be, State: Standby})
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("Register error = %v, want %v", err, tc.wantErr)
			}
			// Read your writes: the answer comes after the view has it.
			b, _ := r.Table().Binding(k)
			var got []string
			if b != nil {
				for _, m := range b.Members {
					got = append(got, m.Name)
				}
			}
			if len(got) != len(tc.wantMembers) {
				t.Fatalf("members after Register = %v, want %v", got, tc.wantMembers)
			}
			for i := range got {
				if got[i] != tc.wantMembers[i] {
					t.Fatalf("members after Register = %v, want %v", got, tc.wantMembers)
				}
			}
			if f.commits != tc.wantCommits {
				t.Errorf("Commit called %d times, want %d", f.commits, tc.wantCommits)
			}
		})
	}
}

// TestRemoteDrain checks that a drain is local and outlives the
// binding's removal from the shared table.
func TestRemoteDrain(t *testing.T) {
	r, _ := newRemote(t)
	ip := netip.MustParseAddr("198.18.0.10")
	be := netip.MustParseAddrPort("198.19.0.10:80")
	k := Key{IP: ip, Port: 80}
	if _, err := r.Register(Registration{Name: "web-a", IP: ip, Port: 80, Backend: be}); err != nil {
		t.Fatal(err)
	}
	if err := r.DeregisterDrain("web-a", k, MaxDrain); err != nil {
		t.Fatal(err)
	}
	tb := r.Table()
	if _, ok := tb.Binding(k); ok {
		t.Errorf("binding %s still in the table after its last member left", k)
	}
	if !tb.MemberOrDraining(k, "web-a") || !tb.Holds(ip) {
		t.Errorf("after DeregisterDrain: draining %v, holds %v; want both", tb.MemberOrDraining(k, "web-a"), tb.Holds(ip))
	}
	if _, err := r.Register(Registration{Name: "web-a", IP: ip, Port: 80, Backend: be}); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Table().Draining(k, "web-a"); ok {
		t.Errorf("web-a still draining after it registered again")
	}
}
