package registry

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// stateVersion is the version of the state file format.
const stateVersion = 1

// stateFile is the on-disk form of a Table.
type stateFile struct {
	Version int `json:"version"`
	// Journal is the generation of the journal that continues this
	// snapshot (see FileStore); zero for none.
	Journal  uint64    `json:"journal,omitempty"`
	Bindings []Binding `json:"bindings"`
}

// MarshalJSON encodes the table as the state file format.
func (t *Table) MarshalJSON() ([]byte, error) { return encodeState(t, 0) }

// encodeState encodes t as a state file continued by journal generation gen.
func encodeState(t *Table, gen uint64) ([]byte, error) {
	bs := t.Bindings()
	f := stateFile{Version: stateVersion, Journal: gen, Bindings: make([]Binding, len(bs))}
	for i, b := range bs {
		f.Bindings[i] = *b
	}
	return json.Marshal(f)
}

// DecodeTable decodes a table in the state file format. It rejects unknown
// fields, a wrong version and duplicate keys; it does not apply the
// registry's validation, which New does on restore.
func DecodeTable(data []byte) (*Table, error) {
	t, _, err := decodeState(data)
	return t, err
}

// decodeState is DecodeTable that also returns the journal generation.
func decodeState(data []byte) (*Table, uint64, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f stateFile
	if err := dec.Decode(&f); err != nil {
		return nil, 0, fmt.Errorf("decode state: %w", err)
	}
	// dec.More is not enough here: at the top level it reports false for a
	// stray ']' or '}', so read to the end instead.
	if _, err := dec.Token(); err != io.EOF {
		return nil, 0, errors.New("decode state: trailing data after the JSON object")
	}
	if f.Version != stateVersion {
		return nil, 0, fmt.Errorf("decode state: version %d, want %d", f.Version, stateVersion)
	}
	t := &Table{}
	for i := range f.Bindings {
		b := &f.Bindings[i]
		if _, dup := t.bindings.get(b.Key); dup {
			return nil, 0, fmt.Errorf("decode state: binding %s appears twice", b.Key)
		}
		t.set(b)
	}
	return t, f.Journal, nil
}

// FileStore keeps the table in a state file (a snapshot) and a journal
// beside it (Path + ".journal") that continues the snapshot.
//
// A save appends what changed since the previous save (the bindings set
// and the keys removed) as one checksummed line to the journal and
// fdatasyncs it: one small write and one flush per save, whatever the
// table's size; no rename and no directory sync. When the journal grows
// past JournalLimit (and at the first save of a process), the save
// compacts instead: it writes the whole table to a new snapshot
// atomically (temporary file, fsync, rename, fsync of the directory) under
// a new journal generation, and only then starts the journal afresh with
// that generation in its first line.
//
// Load reads the snapshot and replays the journal if its generation is
// the snapshot's (otherwise it is older than the snapshot, which already
// holds it). A last line cut short or failing its checksum is a save that
// a crash interrupted, never acknowledged: it is skipped. A bad line with
// good lines after it is damage, and Load fails.
//
// A save also checks that the paths still lead to the snapshot and the
// journal it wrote; if one was removed or replaced (the directory deleted
// while serving, say), the save compacts, recreating the directory, so
// that nothing is appended to a file that a restart would not read.
type FileStore struct {
	// Path is the state file (the snapshot).
	Path string
	// JournalLimit is the journal size above which a save compacts; zero
	// means 4 MiB.
	JournalLimit int64

	mu sync.Mutex
	// journal is open for appending between compactions; nil forces the
	// next save to compact (first save, or after a failed append, which
	// may have left a torn line that a later line must not follow).
	journal *os.File
	size    int64
	// last is the table of the last successful save: the next save's
	// delta is taken against it.
	last *Table
	gen  uint64
	// files are the snapshot and journal that the last compaction
	// wrote, and lock the lock file that Lock holds (storefile.go).
	files storeFiles
	lock  *os.File
}

var _ Store = (*FileStore)(nil)

// JournalPath returns the journal's file name.
func (s *FileStore) JournalPath() string { return s.Path + ".journal" }

// journalMagic starts the journal's first line, followed by its generation.
const journalMagic = "vipmux-journal "

// journalEntry is one journal line: the change from one save to the next.
type journalEntry struct {
	Set []Binding `json:"set,omitempty"`
	Del []Key     `json:"del,omitempty"`
	// Members are changes of single members (see memberChange); journals
	// written before them have none.
	Members []memberChange `json:"members,omitempty"`
}

// Load implements Store. Nothing on disk is an empty table (nil, nil); a
// corrupt snapshot or a damaged journal is an error, and the files are
// left as they are.
func (s *FileStore) Load() (*Table, error) {
	data, err := os.ReadFile(s.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state file: %w", err)
	}
	t, gen, err := decodeState(data)
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", s.Path, err)
	}
	j, err := os.ReadFile(s.JournalPath())
	if errors.Is(err, fs.ErrNotExist) {
		return t, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read state journal: %w", err)
	}
	if err := replay(t, gen, j); err != nil {
		return nil, fmt.Errorf("state journal %s: %w", s.JournalPath(), err)
	}
	return t, nil
}

// replay applies the journal j to t, the snapshot of generation gen.
func replay(t *Table, gen uint64, j []byte) error {
	header, rest, ok := bytes.Cut(j, []byte("\n"))
	var jgen uint64
	if !ok || !bytes.HasPrefix(header, []byte(journalMagic)) {
		return nil // empty, or cut short while being started: nothing in it
	}
	if _, err := fmt.Sscanf(string(header[len(journalMagic):]), "%d", &jgen); err != nil || gen == 0 || jgen != gen {
		return nil // a journal of an older snapshot
	}
	for n := 2; len(rest) > 0; n++ {
		line, after, complete := bytes.Cut(rest, []byte("\n"))
		e, err := decodeJournalLine(line)
		if !complete || err != nil {
			if !complete || len(bytes.TrimSpace(after)) == 0 {
				return nil // the last save, cut short: never acknowledged
			}
			return fmt.Errorf("line %d: %w, with later lines after it", n, err)
		}
		if err := e.apply(t); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		rest = after
	}
	return nil
}

// journalLine returns data as a journal line: "crc32c-hex json\n".
func journalLine(data []byte) []byte {
	line := make([]byte, 0, len(data)+10)
	line = fmt.Appendf(line, "%08x ", crc32.Checksum(data, castagnoli))
	line = append(line, data...)
	return append(line, '\n')
}

func decodeJournalLine(line []byte) (journalEntry, error) {
	var e journalEntry
	sum, data, ok := bytes.Cut(line, []byte(" "))
	var want uint32
	if !ok || len(sum) != 8 {
		return e, errors.New("no checksum")
	}
	if _, err := fmt.Sscanf(string(sum), "%08x", &want); err != nil || crc32.Checksum(data, castagnoli) != want {
		return e, errors.New("checksum mismatch")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		return e, fmt.Errorf("decode: %w", err)
	}
	return e, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// defaultJournalLimit is FileStore.JournalLimit's default.
const defaultJournalLimit = 4 << 20

// Save implements Store.
func (s *FileStore) Save(t *Table) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	limit := s.JournalLimit
	if limit <= 0 {
		limit = defaultJournalLimit
	}
	if s.journal == nil || s.last == nil || s.size > limit || !s.files.intact(s) {
		if err := s.keepLock(); err != nil {
			return err
		}
		return s.compact(t)
	}
	// Tables share the bindings that a change did not replace, and the
	// subtrees of the bindings' trie around them: diff finds what changed
	// without looking at the rest.
	var e journalEntry
	diff(s.last.bindings, t.bindings, e.record)
	if len(e.Set) == 0 && len(e.Del) == 0 && len(e.Members) == 0 {
		s.last = t
		return nil // nothing that the state file keeps changed
	}
	data, err := json.Marshal(e)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	line := journalLine(data)
	if _, err := s.journal.Write(line); err != nil {
		s.closeJournal()
		return fmt.Errorf("write state journal: %w", err)
	}
	if err := unix.Fdatasync(int(s.journal.Fd())); err != nil {
		s.closeJournal()
		return fmt.Errorf("sync state journal: %w", err)
	}
	s.size += int64(len(line))
	s.last = t
	return nil
}

// compact writes t as a new snapshot, durably, then starts the journal
// afresh under the snapshot's generation.
func (s *FileStore) compact(t *Table) error {
	gen := uint64(time.Now().UnixNano())
	if gen <= s.gen {
		gen = s.gen + 1
	}
	data, err := encodeState(t, gen)
	if err != nil {
		return fmt.Errorf("encode state: %w", err)
	}
	if err := s.writeSnapshot(append(data, '\n')); err != nil {
		return err
	}
	s.files.wroteSnapshot(s.Path)
	// The snapshot is durable and names a generation that the old
	// journal lacks: from here the old journal no longer counts.
	s.closeJournal()
	_, statErr := os.Lstat(s.JournalPath())
	created := errors.Is(statErr, fs.ErrNotExist)
	f, err := os.OpenFile(s.JournalPath(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open state journal: %w", err)
	}
	header := fmt.Appendf(nil, "%s%d\n", journalMagic, gen)
	err = f.Truncate(0)
	if err == nil {
		_, err = f.Write(header)
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil && created {
		err = syncDir(filepath.Dir(s.Path))
	}
	if err != nil {
		f.Close()
		// The snapshot alone holds t: the save stands; the next one
		// compacts again, under a newer generation.
		s.gen = gen
		return nil
	}
	s.journal, s.size, s.last, s.gen = f, int64(len(header)), t, gen
	s.files.openedJournal(f)
	return nil
}

func (s *FileStore) closeJournal() {
	if s.journal != nil {
		s.journal.Close()
		s.journal = nil
	}
}

// Close closes the journal and releases the lock (see Lock); a later
// Save opens the journal again (compacting).
func (s *FileStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeJournal()
	s.unlock()
	return nil
}

// writeSnapshot replaces the snapshot with data atomically and durably.
func (s *FileStore) writeSnapshot(data []byte) error {
	dir := filepath.Dir(s.Path)
	if err := makeStateDir(dir); err != nil {
		return err
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
