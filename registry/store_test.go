package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// validState is a state file with one mode-1 and one mode-2 binding.
const validState = `{
  "version": 1,
  "bindings": [
    {"ip": "198.18.0.10", "port": 0, "members": [
      {"name": "web-a", "backend": "198.19.0.2:0", "state": "active", "since": "2026-01-02T03:04:05Z"}]},
    {"ip": "198.18.0.100", "port": 80, "members": [
      {"name": "web-a", "backend": "198.19.0.2:80", "state": "active", "since": "2026-01-02T03:04:05Z"},
      {"name": "web-b", "backend": "198.19.0.3:80", "state": "standby", "since": "2026-01-02T03:04:05Z"}]}
  ]
}
`

func validStateBindings() []Binding {
	return []Binding{
		{Key: Key{IP: ipA}, Members: []Member{member("web-a", beA, Active, t0)}},
		{Key: Key{IP: ipShared, Port: 80}, Members: []Member{
			member("web-a", netip.MustParseAddrPort("198.19.0.2:80"), Active, t0),
			member("web-b", netip.MustParseAddrPort("198.19.0.3:80"), Standby, t0),
		}},
	}
}

func TestDecodeTable(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Binding
		wantErr string
	}{
		{name: "valid", in: validState, want: validStateBindings()},
		{name: "empty table", in: `{"version":1,"bindings":[]}`},
		{name: "null bindings", in: `{"version":1,"bindings":null}`},
		{name: "trailing whitespace", in: `{"version":1,"bindings":[]}` + "\n\n\t "},
		{name: "empty input", in: ``, wantErr: "decode state"},
		{name: "truncated", in: validState[:len(validState)/2], wantErr: "decode state"},
		{name: "not JSON", in: `version = 1`, wantErr: "decode state"},
		{name: "wrong version", in: `{"version":2,"bindings":[]}`, wantErr: "version 2, want 1"},
		{name: "no version", in: `{"bindings":[]}`, wantErr: "version 0, want 1"},
		{name: "unknown field", in: `{"version":1,"bindings":[],"leases":[]}`, wantErr: "unknown field"},
		{name: "unknown member field", in: `{"version":1,"bindings":[{"ip":"198.18.0.10","port":0,"members":[{"name":"a","weight":1}]}]}`, wantErr: "unknown field"},
		{name: "bad ip", in: `{"version":1,"bindings":[{"ip":"198.18.0.300","port":0,"members":[]}]}`, wantErr: "decode state"},
		{name: "port out of range", in: `{"version":1,"bindings":[{"ip":"198.18.0.10","port":65536,"members":[]}]}`, wantErr: "decode state"},
		{
			name:    "duplicate binding",
			in:      `{"version":1,"bindings":[{"ip":"198.18.0.10","port":80,"members":[]},{"ip":"198.18.0.10","port":80,"members":[]}]}`,
			wantErr: "198.18.0.10:80 appears twice",
		},
		{name: "trailing object", in: `{"version":1,"bindings":[]} {}`, wantErr: "trailing data"},
		{name: "trailing garbage", in: `{"version":1,"bindings":[]}x`, wantErr: "trailing data"},
		{name: "trailing bracket", in: `{"version":1,"bindings":[]}]`, wantErr: "trailing data"},
		{name: "trailing brace", in: `{"version":1,"bindings":[]}}`, wantErr: "trailing data"},
		{name: "top-level array", in: `[]`, wantErr: "decode state"},
		{name: "null", in: `null`, wantErr: "version 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeTable([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("DecodeTable() = %d bindings, nil; want an error containing %q", got.Len(), tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("DecodeTable() error = %q, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("DecodeTable() error: %v", err)
			}
			if diff := cmp.Diff(tc.want, bindings(got), cmpOpts, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("DecodeTable() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTableJSONRoundTrip(t *testing.T) {
	tb, err := DecodeTable([]byte(validState))
	if err != nil {
		t.Fatalf("DecodeTable() error: %v", err)
	}
	data, err := json.Marshal(tb)
	if err != nil {
		t.Fatalf("json.Marshal(table) error: %v", err)
	}
	back, err := DecodeTable(data)
	if err != nil {
		t.Fatalf("DecodeTable(%s) error: %v", data, err)
	}
	if diff := cmp.Diff(bindings(tb), bindings(back), cmpOpts); diff != "" {
		t.Errorf("round trip mismatch (-want +got):\n%s", diff)
	}
}

func TestFileStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	// The directory does not exist yet: Save makes it.
	st := &FileStore{Path: filepath.Join(dir, "lib", "state.json")}
	clk := &clock{t: t0}
	r, err := New(Options{Networks: front, Store: st, Now: clk.Now})
	if err != nil {
		t.Fatalf("New() on a missing state file: %v", err)
	}
	mustRegister(t, r,
		Registration{Name: "web-a", IP: ipA, Backend: beA},
		Registration{Name: "web-a", IP: ipShared, Port: 80, Backend: netip.MustParseAddrPort("198.19.0.2:80")},
		Registration{Name: "web-b", IP: ipShared, Port: 80, Backend: netip.MustParseAddrPort("198.19.0.3:80")},
		Registration{Name: "web-c", IP: ipB, Backend: beC},
	)
	if err := r.Deregister("web-c", Key{IP: ipB}); err != nil {
		t.Fatalf("Deregister() error: %v", err)
	}
	if diff := cmp.Diff(validStateBindings(), bindings(r.Table()), cmpOpts); diff != "" {
		t.Fatalf("table before restart mismatch (-want +got):\n%s", diff)
	}

	r2, err := New(Options{Networks: front, Store: &FileStore{Path: st.Path}})
	if err != nil {
		t.Fatalf("New() restoring %s: %v", st.Path, err)
	}
	if diff := cmp.Diff(bindings(r.Table()), bindings(r2.Table()), cmpOpts); diff != "" {
		t.Errorf("restored table mismatch (-want +got):\n%s", diff)
	}
	if m, _, ok := r2.Lookup(ipShared, 80); !ok || m.Name != "web-a" {
		t.Errorf("restored Lookup(%s, 80) = %+v, %v; want web-a", ipShared, m, ok)
	}

	entries, err := os.ReadDir(filepath.Dir(st.Path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if want := []string{"state.json", "state.json.journal"}; !slices.Equal(names, want) {
		t.Errorf("state directory holds %q, want %q (no temporary files left)", names, want)
	}
	for _, p := range []string{st.Path, st.JournalPath()} {
		if info, err := os.Stat(p); err != nil || info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s mode = %v, %v; want no group or other access", p, info.Mode(), err)
		}
	}
}

func TestFileStoreMissing(t *testing.T) {
	st := &FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
	got, err := st.Load()
	if got != nil || err != nil {
		t.Errorf("Load() of a missing file = %v, %v; want nil, nil", got, err)
	}
}

func TestFileStoreCorrupt(t *testing.T) {
	tests := []struct {
		name string
		data string
		// wantLoadErr: FileStore.Load fails; otherwise only New does (the
		// file decodes but is not a valid table).
		wantLoadErr bool
	}{
		{name: "truncated", data: validState[:len(validState)-20], wantLoadErr: true},
		{name: "empty", data: "", wantLoadErr: true},
		{name: "garbage", data: "\x00\x01\x02not json", wantLoadErr: true},
		{name: "wrong version", data: strings.Replace(validState, `"version": 1`, `"version": 9`, 1), wantLoadErr: true},
		{name: "trailing data", data: validState + "]", wantLoadErr: true},
		{name: "two actives", data: strings.Replace(validState, `"standby"`, `"active"`, 1)},
		{name: "ip outside networks", data: strings.Replace(validState, `198.18.0.10`, `198.19.0.10`, 1)},
		{name: "two members on every-port binding", data: strings.Replace(validState, `"port": 80`, `"port": 0`, 1)},
		{name: "bad member name", data: strings.Replace(validState, `"web-b"`, `"web b"`, 1)},
		{name: "member twice", data: strings.Replace(validState, `"web-b"`, `"web-a"`, 1)},
		{name: "no state", data: strings.Replace(validState, `"state": "standby", `, ``, 1)},
		{name: "empty binding", data: `{"version":1,"bindings":[{"ip":"198.18.0.10","port":0,"members":[]}]}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.json")
			if err := os.WriteFile(path, []byte(tc.data), 0o600); err != nil {
				t.Fatal(err)
			}
			st := &FileStore{Path: path}
			got, err := st.Load()
			if tc.wantLoadErr {
				if err == nil {
					t.Errorf("Load() = %d bindings, nil; want an error", got.Len())
				} else if !strings.Contains(err.Error(), path) {
					t.Errorf("Load() error = %q, want it to name %s", err, path)
				}
			} else if err != nil {
				t.Errorf("Load() error: %v; want the file to decode", err)
			}
			if r, err := New(Options{Networks: front, Store: st}); err == nil {
				t.Errorf("New() with state %q = %d bindings, nil; want an error", tc.data, r.Table().Len())
			}
			after, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(after, []byte(tc.data)) {
				t.Errorf("state file changed by Load/New:\nbefore %q\nafter  %q", tc.data, after)
			}
		})
	}
}

func TestFileStoreSaveError(t *testing.T) {
	dir := t.TempDir()
	// The state path's parent is a file, so Save cannot make the directory.
	parent := filepath.Join(dir, "file")
	if err := os.WriteFile(parent, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	st := &FileStore{Path: filepath.Join(dir, "state.json")}
	r, err := New(Options{Networks: front, Store: st})
	if err != nil {
		t.Fatalf("New() error: %v", err)
	}
	st.Path = filepath.Join(parent, "state.json")
	if _, err := r.Register(Registration{Name: "web-a", IP: ipA, Backend: beA}); err == nil {
		t.Fatalf("Register() with an unwritable store = nil, want an error")
	}
	if n := r.Table().Len(); n != 0 {
		t.Errorf("Table().Len() = %d after a failed save, want 0", n)
	}
}

func TestFileStoreMoveAside(t *testing.T) {
	dir := t.TempDir()
	s := &FileStore{Path: filepath.Join(dir, "state.json")}
	if got, err := s.MoveAside(time.Unix(100, 0)); got != "" || err != nil {
		t.Fatalf("MoveAside without a file = %q, %v; want \"\", nil", got, err)
	}
	bad := []byte(`{"version":1,"bindings":[`)
	if err := os.WriteFile(s.Path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(); err == nil {
		t.Fatalf("Load of a truncated file: nil error, want one")
	}
	got, err := s.MoveAside(time.Unix(100, 0))
	if want := s.Path + ".corrupt-100"; got != want || err != nil {
		t.Fatalf("MoveAside = %q, %v; want %q, nil", got, err, want)
	}
	if b, err := os.ReadFile(got); err != nil || string(b) != string(bad) {
		t.Errorf("moved file = %q, %v; want the old bytes %q", b, err, bad)
	}
	if tb, err := s.Load(); tb != nil || err != nil {
		t.Errorf("Load after MoveAside = %v, %v; want nil, nil (empty)", tb, err)
	}
	// A second move in the same second must not overwrite the first.
	os.WriteFile(s.Path, []byte("x"), 0o600)
	if _, err := s.MoveAside(time.Unix(100, 0)); err == nil {
		t.Errorf("MoveAside onto an existing .corrupt file: nil error, want one")
	}
}

// TestFileStoreJournal saves through the journal and reloads after each
// step, as a restart after kill -9 would (no Close): the snapshot plus every
// complete journal line; a torn or corrupt last line is skipped, a damaged
// line with good ones after it is an error, a journal of an older snapshot
// is ignored, and a full journal compacts into a new snapshot.
func TestFileStoreJournal(t *testing.T) {
	table := func(names ...string) *Table {
		tb := &Table{}
		for i, n := range names {
			k := Key{IP: netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)})}
			tb.set(&Binding{Key: k, Members: []Member{{Name: n, Backend: beA, State: Active}}})
		}
		return tb
	}
	names := func(tb *Table) []string {
		var out []string
		for _, b := range tb.Bindings() {
			out = append(out, b.Members[0].Name)
		}
		return out
	}
	load := func(t *testing.T, path string) ([]string, error) {
		t.Helper()
		tb, err := (&FileStore{Path: path}).Load()
		if err != nil || tb == nil {
			return nil, err
		}
		return names(tb), nil
	}
	mustLoad := func(t *testing.T, path string) []string {
		t.Helper()
		got, err := load(t, path)
		if err != nil {
			t.Fatalf("Load() error: %v", err)
		}
		return got
	}
	saveAll := func(t *testing.T, st *FileStore, tables ...[]string) {
		t.Helper()
		for i, n := range tables {
			if err := st.Save(table(n...)); err != nil {
				t.Fatalf("Save %d %v: %v", i, n, err)
			}
		}
	}
	appendTo := func(t *testing.T, path string, b []byte) {
		t.Helper()
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	entryLine := func(t *testing.T, e journalEntry) []byte {
		data, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return journalLine(data)
	}

	t.Run("replays every save", func(t *testing.T) {
		st := &FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
		for i, want := range [][]string{{"a"}, {"a", "b"}, {"a", "b", "c"}, {"a", "c"}, {"x", "c"}} {
			saveAll(t, st, want)
			if got := mustLoad(t, st.Path); !slices.Equal(got, want) {
				t.Errorf("after save %d: Load() = %v, want %v", i, got, want)
			}
		}
		// The first save compacted; the later ones only appended.
		snap, err := os.ReadFile(st.Path)
		if err != nil {
			t.Fatal(err)
		}
		if tb, err := DecodeTable(snap); err != nil || !slices.Equal(names(tb), []string{"a"}) {
			t.Errorf("snapshot = %s, %v; want the first save's table [a]", snap, err)
		}
		j, _ := os.ReadFile(st.JournalPath())
		if n := bytes.Count(j, []byte("\n")); n != 5 {
			t.Errorf("journal has %d lines, want 5 (header and four changes):\n%s", n, j)
		}
	})

	lastLines := []struct {
		name string
		tail func(line []byte) []byte
	}{
		{"torn line", func(line []byte) []byte { return line[:len(line)/2] }},
		{"line without newline", func(line []byte) []byte { return line[:len(line)-1] }},
		{"bad checksum", func(line []byte) []byte { l := slices.Clone(line); l[0] ^= 1; return l }},
		{"flipped byte in change", func(line []byte) []byte { l := slices.Clone(line); l[len(l)/2] ^= 0x20; return l }},
		{"garbage", func([]byte) []byte { return []byte("\x00\x00garbage\n") }},
	}
	for _, tc := range lastLines {
		t.Run("last line "+tc.name, func(t *testing.T) {
			st := &FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
			saveAll(t, st, []string{"a"}, []string{"a", "b"})
			c, _ := table("a", "b", "c").Binding(Key{IP: netip.MustParseAddr("198.18.0.12")})
			e := journalEntry{Set: []Binding{*c}}
			appendTo(t, st.JournalPath(), tc.tail(entryLine(t, e)))
			if got, want := mustLoad(t, st.Path), []string{"a", "b"}; !slices.Equal(got, want) {
				t.Errorf("Load() = %v, want %v (without the cut-short save)", got, want)
			}
		})
	}

	t.Run("damaged line before good ones", func(t *testing.T) {
		st := &FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
		saveAll(t, st, []string{"a"}, []string{"a", "b"})
		appendTo(t, st.JournalPath(), []byte("00000000 {}\n"))
		saveAll(t, st, []string{"a", "b", "c"})
		if got, err := load(t, st.Path); err == nil || !strings.Contains(err.Error(), st.JournalPath()) {
			t.Errorf("Load() = %v, %v; want an error naming %s", got, err, st.JournalPath())
		}
	})

	t.Run("journal of an older snapshot", func(t *testing.T) {
		st := &FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
		saveAll(t, st, []string{"a"}, []string{"a", "b"})
		old, err := os.ReadFile(st.JournalPath())
		if err != nil {
			t.Fatal(err)
		}
		// A new process compacts at its first save: [x] is the snapshot.
		st2 := &FileStore{Path: st.Path}
		saveAll(t, st2, []string{"x"})
		// A crash between the snapshot and the journal's restart leaves
		// the old journal: it must not be replayed onto the new snapshot.
		if err := os.WriteFile(st.JournalPath(), old, 0o600); err != nil {
			t.Fatal(err)
		}
		if got, want := mustLoad(t, st.Path), []string{"x"}; !slices.Equal(got, want) {
			t.Errorf("Load() = %v, want %v (the old journal ignored)", got, want)
		}
	})

	t.Run("compaction", func(t *testing.T) {
		st := &FileStore{Path: filepath.Join(t.TempDir(), "state.json"), JournalLimit: 600}
		var want []string
		for i := range 30 {
			want = append(want, fmt.Sprintf("s%d", i))
			saveAll(t, st, want)
			if got := mustLoad(t, st.Path); !slices.Equal(got, want) {
				t.Fatalf("after save %d: Load() = %v, want %v", i, got, want)
			}
		}
		snap, err := os.ReadFile(st.Path)
		if err != nil {
			t.Fatal(err)
		}
		if tb, err := DecodeTable(snap); err != nil || tb.Len() < 10 {
			t.Errorf("snapshot = %v, %v; want a table compacted from the journal", tb, err)
		}
		if fi, err := os.Stat(st.JournalPath()); err != nil || fi.Size() > 2*st.JournalLimit {
			t.Errorf("journal %v, %v; want it compacted near %d bytes", fi.Size(), err, st.JournalLimit)
		}
	})

	t.Run("move aside takes the journal", func(t *testing.T) {
		st := &FileStore{Path: filepath.Join(t.TempDir(), "state.json")}
		saveAll(t, st, []string{"a"}, []string{"a", "b"})
		got, err := st.MoveAside(time.Unix(100, 0))
		if err != nil || got != st.Path+".corrupt-100" {
			t.Fatalf("MoveAside = %q, %v", got, err)
		}
		if _, err := os.Stat(st.JournalPath() + ".corrupt-100"); err != nil {
			t.Errorf("journal not moved aside: %v", err)
		}
		if got := mustLoad(t, st.Path); got != nil {
			t.Errorf("Load() after MoveAside = %v, want empty", got)
		}
		// The store works on: the next save starts a new snapshot.
		saveAll(t, st, []string{"z"})
		if got := mustLoad(t, st.Path); !slices.Equal(got, []string{"z"}) {
			t.Errorf("Load() = %v, want [z]", got)
		}
	})
}
