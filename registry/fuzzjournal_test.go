package registry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzJournalReplay (issue 12 point 12) fuzzes what a restart reads after
// the snapshot: the journal. A snapshot of a real table is fixed; the
// fuzzed bytes are its journal, either as they are (sum false) or as the
// bodies of lines that get a right checksum (sum true), so that the
// mutations reach the decoding and the replay of the entries, not only
// the checksum. Load must never panic; what it accepts must restore in a
// registry (which validates it) without panicking, and survive being
// written as a snapshot and read back unchanged.
func FuzzJournalReplay(f *testing.F) {
	snapshot, journal := realJournal(f)
	var gen struct {
		Journal uint64 `json:"journal"`
	}
	if err := json.Unmarshal(snapshot, &gen); err != nil || gen.Journal == 0 {
		f.Fatalf("snapshot names no journal generation: %v\n%s", err, snapshot)
	}
	f.Add(journal, false)
	f.Add(journal[:len(journal)-7], false) // the last save cut short
	f.Add([]byte{}, false)
	// The same saves as line bodies, for the checksummed form.
	var bodies [][]byte
	for i, line := range bytes.Split(bytes.TrimSuffix(journal, []byte("\n")), []byte("\n")) {
		if _, body, ok := bytes.Cut(line, []byte(" ")); ok && i > 0 {
			bodies = append(bodies, body)
		}
	}
	f.Add(bytes.Join(bodies, []byte("\n")), true)
	// The seeds are valid: they replay to the table that was saved.
	for _, j := range [][]byte{journal, checksummed(gen.Journal, bytes.Join(bodies, []byte("\n")))} {
		tb, g, err := decodeState(snapshot)
		if err == nil {
			err = replay(tb, g, j)
		}
		if err != nil || tb.Len() != 2 {
			f.Fatalf("seed journal replays to %v, %v; want the 2 bindings saved\n%s", tb, err, j)
		}
	}
	f.Add([]byte(`{"set":[{"ip":"198.18.0.10","port":0,"members":null}]}`+"\n"+`{"del":[{"ip":"198.18.0.10","port":0}]}`), true)
	f.Add([]byte(`{"del":[{"ip":"198.18.0.99","port":7}],"set":[]}`), true)

	f.Fuzz(func(t *testing.T, data []byte, sum bool) {
		if sum {
			data = checksummed(gen.Journal, data)
		}
		// What Load does after reading the two files, in memory: a file
		// per input would make the fuzzer wait on the disk.
		tb, g, err := decodeState(snapshot)
		if err != nil {
			t.Fatalf("decode the fixed snapshot: %v", err)
		}
		if err := replay(tb, g, data); err != nil {
			return
		}
		if r, err := New(Options{Networks: front, Store: memStore{tb}}); err == nil {
			for _, b := range r.Table().Bindings() {
				r.Lookup(b.IP, b.Port)
			}
		}
		// Saving compacts the table into a snapshot: its encoding, which
		// must decode to the same table. (In memory: a Save per input
		// would fsync.)
		enc, err := json.Marshal(tb)
		if err != nil {
			return // a time that JSON cannot encode (year > 9999): encoding/json's limit
		}
		back, err := DecodeTable(enc)
		if err != nil {
			t.Fatalf("replayed table encodes as %s, which does not decode: %v", enc, err)
		}
		if diff := cmp.Diff(bindings(tb), bindings(back), cmpOpts); diff != "" {
			t.Fatalf("replayed table changed by an encode and a decode (-want +got):\n%s", diff)
		}
	})
}

// checksummed is a journal of generation gen whose lines are the lines
// of bodies, each with its right checksum.
func checksummed(gen uint64, bodies []byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s%d\n", journalMagic, gen)
	for _, line := range bytes.Split(bodies, []byte("\n")) {
		b.Write(journalLine(line))
	}
	return b.Bytes()
}

// realJournal returns the snapshot and the journal that a few real saves
// leave: registrations, a second member, a removal.
func realJournal(f *testing.F) (snapshot, journal []byte) {
	path := filepath.Join(f.TempDir(), "state.json")
	st := &FileStore{Path: path}
	r, err := New(Options{Networks: front, Store: st})
	if err != nil {
		f.Fatalf("New() error: %v", err)
	}
	shared := netip.MustParseAddr("198.18.0.100")
	for _, reg := range []Registration{
		{Name: "web-a", IP: ipA, Backend: beA},
		{Name: "web-b", IP: ipB, Backend: beC},
		{Name: "web-a", IP: shared, Port: 80, Backend: netip.MustParseAddrPort("198.19.0.2:80")},
		{Name: "web-b", IP: shared, Port: 80, Backend: netip.MustParseAddrPort("198.19.0.3:80")},
	} {
		if _, err := r.Register(reg); err != nil {
			f.Fatalf("Register(%+v): %v", reg, err)
		}
	}
	if err := r.Deregister("web-b", Key{IP: ipB}); err != nil {
		f.Fatalf("Deregister: %v", err)
	}
	st.Close()
	if snapshot, err = os.ReadFile(path); err != nil {
		f.Fatal(err)
	}
	if journal, err = os.ReadFile(st.JournalPath()); err != nil {
		f.Fatal(err)
	}
	return snapshot, journal
}
