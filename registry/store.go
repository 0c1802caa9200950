package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// stateVersion is the version of the state file format.
const stateVersion = 1

// stateFile is the on-disk form of a Table.
type stateFile struct {
	Version  int       `json:"version"`
	Bindings []Binding `json:"bindings"`
}

// MarshalJSON encodes the table as the state file format.
func (t *Table) MarshalJSON() ([]byte, error) {
	bs := t.Bindings()
	f := stateFile{Version: stateVersion, Bindings: make([]Binding, len(bs))}
	for i, b := range bs {
		f.Bindings[i] = *b
	}
	return json.Marshal(f)
}

// DecodeTable decodes a table in the state file format. It rejects unknown
// fields, a wrong version and duplicate keys; it does not apply the
// registry's validation, which New does on restore.
func DecodeTable(data []byte) (*Table, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f stateFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("decode state: %w", err)
	}
	// dec.More is not enough here: at the top level it reports false for a
	// stray ']' or '}', so read to the end instead.
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("decode state: trailing data after the JSON object")
	}
	if f.Version != stateVersion {
		return nil, fmt.Errorf("decode state: version %d, want %d", f.Version, stateVersion)
	}
	t := &Table{bindings: make(map[Key]*Binding, len(f.Bindings))}
	for i := range f.Bindings {
		b := f.Bindings[i]
		if _, dup := t.bindings[b.Key]; dup {
			return nil, fmt.Errorf("decode state: binding %s appears twice", b.Key)
		}
		t.bindings[b.Key] = &b
	}
	return t, nil
}

// FileStore keeps the table in one JSON file, replaced atomically on every
// save: write a temporary file, fsync it, rename it over the old one, fsync
// the directory. A crash leaves either the old or the new file, never a
// torn one.
type FileStore struct {
	// Path is the state file.
	Path string
}

var _ Store = (*FileStore)(nil)

// Load implements Store. A missing file is an empty table (nil, nil); a
// corrupt one is an error, and the file is left as it is.
func (s *FileStore) Load() (*Table, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	t, err := DecodeTable(data)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", s.Path, err)
	}
	return t, nil
}

// Save implements Store.
func (s *FileStore) Save(t *Table) error {
	// Compact, and without json.Marshal's re-scan of MarshalJSON output:
	// the table is written whole on every save, and at 10,000 bindings
	// indenting tripled the cost (jq . reads it back readably).
	data, err := t.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	data = append(data, '\n')
	dir := filepath.Dir(s.Path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(s.Path)+".tmp*")
	if err != nil {
		return fmt.Errorf("state temp file: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write state: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("sync state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close state: %w", err)
	}
	if err := os.Rename(tmp.Name(), s.Path); err != nil {
		return fmt.Errorf("replace state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open state directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync state directory: %w", err)
	}
	return nil
}

// MoveAside renames the state file to "<Path>.corrupt-<unix time>" and
// returns the new name; it never deletes anything. A missing file is not
// an error: it returns "". `serve --reset-state` uses it to start with an
// empty table while keeping the old file for inspection.
func (s *FileStore) MoveAside(now time.Time) (string, error) {
	if _, err := os.Lstat(s.Path); errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	to := fmt.Sprintf("%s.corrupt-%d", s.Path, now.Unix())
	if _, err := os.Lstat(to); err == nil {
		return "", fmt.Errorf("move state file %s aside: %s already exists", s.Path, to)
	}
	if err := os.Rename(s.Path, to); err != nil {
		return "", fmt.Errorf("move state file aside: %w", err)
	}
	if d, err := os.Open(filepath.Dir(s.Path)); err == nil {
		_ = d.Sync() // the rename is durable before the first save
		d.Close()
	}
	return to, nil
}
