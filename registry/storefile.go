package registry

import (
	"fmt"
	"os"
	"path/filepath"
)

// This file is the FileStore's hold on its files: the check that the
// snapshot and the journal it writes to are still the ones at its paths,
// and the lock that keeps a second gateway off the same state path.

// storeFiles remembers which files the last compaction wrote, so that a
// save notices when one of them was removed or replaced (rm -rf of the
// state directory, a backup copied over the snapshot, an editor's rename
// over the journal). Appending to a journal that no path leads to any
// more would "succeed" into a deleted file, and a restart would find an
// empty or stale table.
type storeFiles struct {
	snapshot, journal os.FileInfo
}

// wroteSnapshot records the snapshot just renamed into place at path.
func (f *storeFiles) wroteSnapshot(path string) {
	f.snapshot, f.journal = nil, nil
	if fi, err := os.Stat(path); err == nil {
		f.snapshot = fi
	}
}

// openedJournal records the journal just started.
func (f *storeFiles) openedJournal(j *os.File) {
	f.journal = nil
	if fi, err := j.Stat(); err == nil {
		f.journal = fi
	}
}

// intact reports whether s's paths still lead to the snapshot and the
// journal that the last compaction wrote: two stat calls, beside the
// fdatasync that every save does. When it reports false, the save
// compacts: it writes the whole table to a fresh snapshot (recreating the
// directory) and starts a new journal.
func (f *storeFiles) intact(s *FileStore) bool {
	if f.snapshot == nil || f.journal == nil {
		return false
	}
	snap, err := os.Stat(s.Path)
	if err != nil || !os.SameFile(snap, f.snapshot) {
		return false
	}
	j, err := os.Stat(s.JournalPath())
	return err == nil && os.SameFile(j, f.journal)
}

// makeStateDir makes dir and any missing parent, and syncs the directory
// above each one it made, so that the new directories are durable before
// the snapshot written into them is.
func makeStateDir(dir string) error {
	var made []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || d == filepath.Dir(d) {
			break
		}
		made = append(made, d)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	for _, d := range made {
		if err := syncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}
