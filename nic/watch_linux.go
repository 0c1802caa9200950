package nic

import (
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
)

// linkCheckInterval is how often a link's watcher asks the kernel whether
// the interface still exists; a receive error on the interface (ENETDOWN)
// makes it ask at once.
const linkCheckInterval = time.Second

// watch starts l's watcher: it marks l failed (Fail) when interface
// ifindex no longer exists in the process's network namespace. A packet
// socket bound to a deleted interface reports ENETDOWN once, then waits
// for ever without error, and the kernel's notice may come before the
// interface is gone from the namespace: only asking the kernel tells
// "down for a while" from "gone". check, when received from, makes the
// watcher ask at once. Close stops the watcher before anything else.
func (l *Link) watch(ifindex int, check <-chan struct{}) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(linkCheckInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			case <-check:
			}
			if err := linkGone(ifindex); err != nil {
				l.Fail(fmt.Errorf("front interface %s (index %d) is gone: %w; the gateway cannot receive or send on it", l.Name, ifindex, err))
				return
			}
		}
	}()
	closeLink := l.close
	l.close = func() error {
		close(stop)
		<-done
		return closeLink()
	}
}

// failReceive marks l failed after its receive loop stopped on err: as
// gone if interface ifindex no longer exists (the loop's error, often
// ENETDOWN, says less), as a receive failure otherwise.
func (l *Link) failReceive(ifindex int, err error) {
	if gone := linkGone(ifindex); gone != nil {
		l.Fail(fmt.Errorf("front interface %s (index %d) is gone: %w; its receive loop stopped: %v", l.Name, ifindex, gone, err))
		return
	}
	l.Fail(fmt.Errorf("front interface %s: receive failed: %w; the stack receives nothing more", l.Name, err))
}

// linkGone returns an error if interface ifindex does not exist; nil if
// it does or if the kernel's answer was something else (a transient
// failure is asked again at the next check).
func linkGone(ifindex int) error {
	_, err := netlink.LinkByIndex(ifindex)
	var nf netlink.LinkNotFoundError
	if errors.As(err, &nf) {
		return err
	}
	return nil
}
