package registry

import (
	"encoding/json"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// memStore is a Store that returns a fixed table.
type memStore struct{ t *Table }

func (s memStore) Load() (*Table, error) { return s.t, nil }
func (s memStore) Save(t *Table) error   { return nil }

// FuzzDecodeTable checks that DecodeTable never panics, that a table it
// accepts survives an encode/decode round trip, and that restoring it in a
// registry (which validates it) never panics either.
func FuzzDecodeTable(f *testing.F) {
	f.Add([]byte(validState))
	f.Add([]byte(`{"version":1,"bindings":[]}`))
	f.Add([]byte(`{"version":1,"bindings":[{"ip":"198.18.0.10","port":0,"members":[]}]}`))
	f.Add([]byte(`{"version":1,"bindings":[{"ip":"","port":0,"members":[{"name":"","backend":"","state":"","since":"0001-01-01T00:00:00Z"}]}]}`))
	f.Add([]byte(`{"version":1,"bindings":[{"ip":"fe80::1%eth0","port":80,"members":null}]}`))
	f.Add([]byte(`{"version":1,"bindings":[]}]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tb, err := DecodeTable(data)
		if err != nil {
			return
		}
		// Restoring validates; it may refuse, but must not panic.
		if r, err := New(Options{Networks: front, Store: memStore{tb}}); err == nil {
			for _, b := range r.Table().Bindings() {
				r.Lookup(b.IP, b.Port)
			}
		}
		enc, err := json.Marshal(tb)
		if err != nil {
			// A time that JSON cannot encode (year > 9999) decodes but
			// does not encode; that is encoding/json's limit.
			return
		}
		back, err := DecodeTable(enc)
		if err != nil {
			t.Fatalf("DecodeTable(%s) accepted, re-encoded as %s, which fails: %v", data, enc, err)
		}
		if diff := cmp.Diff(bindings(tb), bindings(back), cmpOpts); diff != "" {
			t.Fatalf("round trip of %s mismatch (-want +got):\n%s", data, diff)
		}
	})
}
