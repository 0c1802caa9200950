package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"hash/crc32"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
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

// FileStore keeps the table in a state file (a snapshot) and a journal
// beside it (Path + ".journal").
//
// A save appends the whole table, compact, as one checksummed line to the
// journal and fdatasyncs it: one flush per save, no rename and no
// directory sync, which halves what a switch waits for. When the journal
// grows past JournalLimit (and at the first save), the save compacts
// instead: it replaces the snapshot atomically (write a temporary file,
// fsync, rename, fsync the directory) and only then empties the journal.
//
// Load reads the snapshot, then the journal's last complete line whose
// checksum holds; that line, if any, is the newest table. A crash leaves
// either a complete last line (the change was durable) or a torn one
// (never acknowledged), never a torn snapshot.
type FileStore struct {
	// Path is the state file (the snapshot).
	Path string
	// JournalLimit is the journal size above which a save compacts; zero
	// means 4 MiB. At most one snapshot write per ~JournalLimit/table-size
	// saves.
	JournalLimit int64

	mu sync.Mutex
	// journal is open for appending between compactions; nil forces the
	// next save to compact (first save, or after a failed append, which
	// may have left a torn line that a later line must not follow).
	journal *os.File
	size    int64
}

var _ Store = (*FileStore)(nil)

// JournalPath returns the journal's file name.
func (s *FileStore) JournalPath() string { return s.Path + ".journal" }

// Load implements Store. A missing file is an empty table (nil, nil); a
// corrupt snapshot is an error, and the files are left as they are.
func (s *FileStore) Load() (*Table, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		data = nil
	} else if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	var t *Table
	if data != nil {
		if t, err = DecodeTable(data); err != nil {
			return nil, fmt.Errorf("state file %s: %w", s.Path, err)
		}
	}
	j, err := os.ReadFile(s.JournalPath())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read state journal: %w", err)
	}
	if newest := lastJournalTable(j); newest != nil {
		t = newest
	}
	return t, nil
}

// lastJournalTable returns the table of the journal's last complete line
// that has a valid checksum and decodes, or nil. A torn last line (a save
// cut short by a crash, never acknowledged) is skipped.
func lastJournalTable(j []byte) *Table {
	j = j[:bytes.LastIndexByte(j, '\n')+1] // drop a line without its newline
	for len(j) > 0 {
		j = j[:len(j)-1]
		line := j[bytes.LastIndexByte(j, '\n')+1:]
		j = j[:len(j)-len(line)]
		if t := decodeJournalLine(line); t != nil {
			return t
		}
	}
	return nil
}

// journalLine returns data as a journal line: "crc32c-hex table\n".
func journalLine(data []byte) []byte {
	line := make([]byte, 0, len(data)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(data, castagnoli))
	line = append(line, data...)
	return append(line, '\n')
}

func decodeJournalLine(line []byte) *Table {
	sum, data, ok := bytes.Cut(line, []byte(" "))
	if !ok || len(sum) != 8 {
		return nil
	}
	var want uint32
	if _, err := fmt.Sscanf(string(sum), "%08x", &want); err != nil || crc32.Checksum(data, castagnoli) != want {
		return nil
	}
	t, err := DecodeTable(data)
	if err != nil {
		return nil
	}
	return t
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// defaultJournalLimit is FileStore.JournalLimit's default.
const defaultJournalLimit = 4 << 20

// Save implements Store.
func (s *FileStore) Save(t *Table) error {
	// Compact, and without json.Marshal's re-scan of MarshalJSON output:
	// the table is written whole on every save, and at 10,000 bindings
	// indenting tripled the cost (jq . reads it back readably).
	data, err := t.MarshalJSON()
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := s.JournalLimit
	if limit <= 0 {
		limit = defaultJournalLimit
	}
	line := journalLine(data)
	if s.journal == nil || s.size+int64(len(line)) > limit {
		return s.compact(data)
	}
	if _, err := s.journal.Write(line); err != nil {
		s.closeJournal()
		return fmt.Errorf("write state journal: %w", err)
	}
	if err := unix.Fdatasync(int(s.journal.Fd())); err != nil {
		s.closeJournal()
		return fmt.Errorf("sync state journal: %w", err)
	}
	s.size += int64(len(line))
	return nil
}

// compact makes data the snapshot, durably, then empties the journal.
func (s *FileStore) compact(data []byte) error {
	if err := s.writeSnapshot(append(data, '\n')); err != nil {
		return err
	}
	// The snapshot is durable: only now may the journal's tables go.
	created := false
	if s.journal == nil {
		_, statErr := os.Lstat(s.JournalPath())
		created = errors.Is(statErr, fs.ErrNotExist)
		f, err := os.OpenFile(s.JournalPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return fmt.Errorf("open state journal: %w", err)
		}
		s.journal = f
	}
	if err := s.journal.Truncate(0); err != nil {
		s.closeJournal()
		return fmt.Errorf("empty state journal: %w", err)
	}
	if err := s.journal.Sync(); err != nil {
		s.closeJournal()
		return fmt.Errorf("sync state journal: %w", err)
	}
	if created {
		if err := syncDir(filepath.Dir(s.Path)); err != nil {
			s.closeJournal()
			return err
		}
	}
	s.size = 0
	return nil
}

func (s *FileStore) closeJournal() {
	if s.journal != nil {
		s.journal.Close()
		s.journal = nil
	}
}

// Close closes the journal; a later Save opens it again (compacting).
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeJournal()
	return nil
}

// writeSnapshot replaces the snapshot with data atomically and durably.
func (s *FileStore) writeSnapshot(data []byte) error {
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
	return syncDir(dir)
}

func syncDir(dir string) error {
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

// MoveAside renames the state file to "<Path>.corrupt-<unix time>" (and
// the journal, if any, to "<Path>.journal.corrupt-<unix time>") and returns
// the new name of the first that existed; it never deletes anything.
// Nothing to move is not an error: it returns "". `serve --reset-state`
// uses it to start with an empty table while keeping the old files for
// inspection.
func (s *FileStore) MoveAside(now time.Time) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeJournal()
	var first string
	for _, from := range []string{s.Path, s.JournalPath()} {
		if _, err := os.Lstat(from); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		to := fmt.Sprintf("%s.corrupt-%d", from, now.Unix())
		if _, err := os.Lstat(to); err == nil {
			return "", fmt.Errorf("move state file %s aside: %s already exists", from, to)
		}
		if err := os.Rename(from, to); err != nil {
			return "", fmt.Errorf("move state file aside: %w", err)
		}
		if first == "" {
			first = to
		}
	}
	if first != "" {
		_ = syncDir(filepath.Dir(s.Path)) // the renames are durable before the first save
	}
	return first, nil
}
