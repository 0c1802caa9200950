//go:build linux

package nic

import (
	"errors"
	"io/fs"
	"testing"

	"golang.org/x/sys/unix"
)

func TestPermError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		want     string
		wantPerm bool
	}{
		{"EPERM names the capability", unix.EPERM, "open packet socket: operation not permitted (needs CAP_NET_RAW)", true},
		{"EACCES names the capability", unix.EACCES, "open packet socket: permission denied (needs CAP_NET_RAW)", true},
		{"other errors do not", unix.ENODEV, "open packet socket: no such device", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := permError("open packet socket", tc.err, "CAP_NET_RAW")
			if got := err.Error(); got != tc.want {
				t.Errorf("permError(%v) = %q, want %q", tc.err, got, tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Errorf("permError(%v) does not wrap %v", tc.err, tc.err)
			}
			if got := errors.Is(err, fs.ErrPermission); got != tc.wantPerm {
				t.Errorf("errors.Is(permError(%v), fs.ErrPermission) = %v, want %v", tc.err, got, tc.wantPerm)
			}
		})
	}
}
