package registry

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
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

// ErrLocked reports a state path whose lock another process holds:
// another gateway runs on the same state file.
var ErrLocked = errors.New("state file in use by another process")

// LockPath returns the lock file's name: Path + ".lock".
func (s *FileStore) LockPath() string { return s.Path + ".lock" }

// Lock takes an exclusive lock (flock) on LockPath, making the directory
// and the file if needed, and writes the process's pid into it. A second
// gateway on the same state path would restore the table, then each
// would overwrite the other's saves: Lock refuses it with an error that
// wraps ErrLocked and names the state file, the lock file and the
// holder's pid. The lock holds until Close or the process's end (the
// kernel releases it, also after kill -9, so a stale lock file is
// harmless). Lock is idempotent. Load and Save do not need it: `vipmux
// check` reads a running gateway's state file without it.
func (s *FileStore) Lock() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lock != nil {
		return nil
	}
	f, err := s.takeLock()
	if err != nil {
		return err
	}
	s.lock = f
	return nil
}

// takeLock opens LockPath and locks it without waiting.
func (s *FileStore) takeLock() (*os.File, error) {
	if err := makeStateDir(filepath.Dir(s.Path)); err != nil {
		return nil, err
	}
	p := s.LockPath()
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state lock file: %w", err)
	}
	err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
	if errors.Is(err, unix.EWOULDBLOCK) {
		pid := "unknown"
		if b, rerr := os.ReadFile(p); rerr == nil {
			if n, perr := strconv.Atoi(string(bytes.TrimSpace(b))); perr == nil {
				pid = strconv.Itoa(n)
			}
		}
		f.Close()
		return nil, fmt.Errorf("%w: %s is locked by pid %s (lock file %s)", ErrLocked, s.Path, pid, p)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	// The pid is for the refusal's message only: the flock is the lock.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// keepLock takes the lock again if the lock file that Lock took is no
// longer at LockPath (the state directory was removed or replaced): the
// save that recreates the directory recreates the lock too, so that a
// gateway started later is still refused. It fails if another process
// took the new lock meanwhile: then two gateways write the same state
// path, and this one must not overwrite the other's snapshot. Without
// Lock, it does nothing.
func (s *FileStore) keepLock() error {
	if s.lock == nil {
		return nil
	}
	held, err := s.lock.Stat()
	if err != nil {
		return fmt.Errorf("state lock file: %w", err)
	}
	if now, err := os.Stat(s.LockPath()); err == nil && os.SameFile(now, held) {
		return nil
	}
	f, err := s.takeLock()
	if err != nil {
		return fmt.Errorf("state directory replaced while serving: %w", err)
	}
	s.lock.Close()
	s.lock = f
	return nil
}

// unlock releases the lock, if held.
func (s *FileStore) unlock() {
	if s.lock != nil {
		s.lock.Close() // closing the last descriptor releases the flock
		s.lock = nil
	}
}
