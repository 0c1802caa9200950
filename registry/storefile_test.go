package registry

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestFileStoreReplaced (issue 12 point 9): a state file, journal or
// directory removed or replaced behind the store's back is noticed on the
// next save, which writes a fresh snapshot (recreating the directory), so
// that a restart finds every change, not an empty or stale table.
func TestFileStoreReplaced(t *testing.T) {
	tests := []struct {
		name string
		// tamper runs between two saves; path is the state file.
		tamper func(t *testing.T, path string)
	}{
		{name: "directory removed", tamper: func(t *testing.T, path string) {
			if err := os.RemoveAll(filepath.Dir(path)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "journal removed", tamper: func(t *testing.T, path string) {
			if err := os.Remove(path + ".journal"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "state file removed", tamper: func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "journal replaced", tamper: func(t *testing.T, path string) {
			// As an editor or a restore from backup does: a new file
			// renamed over the old one.
			if err := os.WriteFile(path+".new", []byte("vipmux-journal 1\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".new", path+".journal"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "state file replaced by an older copy", tamper: func(t *testing.T, path string) {
			if err := os.WriteFile(path+".new", []byte(`{"version":1,"bindings":[]}`+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(path+".new", path); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lib", "state.json")
			st := &FileStore{Path: path}
			r, err := New(Options{Networks: front, Store: st})
			if err != nil {
				t.Fatalf("New() error: %v", err)
			}
			// Two saves: the first compacts, the second appends to the
			// journal, which is the path that must notice.
			mustRegister(t, r, Registration{Name: "web-a", IP: ipA, Backend: beA})
			mustRegister(t, r, Registration{Name: "web-b", IP: ipB, Backend: beC})
			tc.tamper(t, path)
			mustRegister(t, r, Registration{Name: "web-c", IP: netip.MustParseAddr("198.18.0.12"), Backend: beC})

			got, err := (&FileStore{Path: path}).Load()
			if err != nil {
				t.Fatalf("Load() after the save that followed: %v", err)
			}
			var names []string
			if got != nil {
				for _, b := range got.Bindings() {
					names = append(names, b.Members[0].Name)
				}
			}
			if want := []string{"web-a", "web-b", "web-c"}; !slices.Equal(names, want) {
				t.Errorf("restart after %s and one save finds %q, want %q", tc.name, names, want)
			}
			// Later saves go on through the journal of the new snapshot.
			if err := r.Deregister("web-a", Key{IP: ipA}); err != nil {
				t.Fatalf("Deregister() error: %v", err)
			}
			got, err = (&FileStore{Path: path}).Load()
			if err != nil || got == nil || got.Len() != 2 {
				t.Errorf("Load() after a later save = %v, %v; want 2 bindings", got, err)
			}
		})
	}
}

// TestFileStoreLock (issue 12 point 9): a second store on the same state
// path cannot lock it while the first holds it; the error names the path
// and the holder's pid. Close lets go.
func TestFileStoreLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lib", "state.json")
	first := &FileStore{Path: path}
	if err := first.Lock(); err != nil {
		t.Fatalf("first Lock() on a fresh path: %v", err)
	}
	second := &FileStore{Path: path}
	err := second.Lock()
	if err == nil {
		t.Fatalf("second Lock() while the first holds it = nil, want an error")
	}
	for _, want := range []string{path, fmt.Sprintf("pid %d", os.Getpid())} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("second Lock() error = %q, want it to name %q", err, want)
		}
	}
	if err := first.Close(); err != nil {
		t.Fatalf("Close() error: %v", err)
	}
	if err := second.Lock(); err != nil {
		t.Errorf("Lock() after the holder closed: %v, want nil", err)
	}
	second.Close()
}

// TestFileStoreLockKept: the save that recreates a removed state directory
// recreates the lock file too, so that a gateway started afterwards is
// still refused.
func TestFileStoreLockKept(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lib", "state.json")
	st := &FileStore{Path: path}
	if err := st.Lock(); err != nil {
		t.Fatalf("Lock(): %v", err)
	}
	defer st.Close()
	r, err := New(Options{Networks: front, Store: st})
	if err != nil {
		t.Fatalf("New() error: %v", err)
	}
	mustRegister(t, r, Registration{Name: "web-a", IP: ipA, Backend: beA})
	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, Registration{Name: "web-b", IP: ipB, Backend: beC})
	other := &FileStore{Path: path}
	if err := other.Lock(); !errors.Is(err, ErrLocked) {
		other.Close()
		t.Errorf("Lock() by another store after the directory was recreated = %v, want ErrLocked", err)
	}
}

// TestFileStoreIntactAppends: with the files left alone, the check costs
// no compaction: saves after the first append to the journal and leave
// the snapshot as it is.
func TestFileStoreIntactAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	st := &FileStore{Path: path}
	r, err := New(Options{Networks: front, Store: st})
	if err != nil {
		t.Fatalf("New() error: %v", err)
	}
	mustRegister(t, r, Registration{Name: "web-a", IP: ipA, Backend: beA})
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, Registration{Name: "web-b", IP: ipB, Backend: beC})
	mustRegister(t, r, Registration{Name: "web-c", IP: netip.MustParseAddr("198.18.0.12"), Backend: beC})
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Errorf("the snapshot was rewritten by saves of untouched files, want them appended to the journal")
	}
	j, err := os.ReadFile(st.JournalPath())
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(string(j), "\n"); lines != 3 {
		t.Errorf("journal has %d lines after a compaction and two saves, want 3 (header and two saves)\n%s", lines, j)
	}
}
