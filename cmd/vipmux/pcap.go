package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/vipmux/vipmux/nic"
	gstack "gvisor.dev/gvisor/pkg/tcpip/stack"
)

// pcapFile is serve --pcap: a capture of the front NIC's frames into a
// file. A nil *pcapFile captures nothing.
type pcapFile struct {
	path string
	f    *os.File
	c    *nic.Capture
	log  *slog.Logger
}

// createPcap creates (or truncates) the capture file at path, mode 0600:
// it will hold every client's traffic. Empty path: nil, nil.
func createPcap(path string, log *slog.Logger) (*pcapFile, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("--pcap: %w", err)
	}
	// O_CREATE leaves an existing file's mode as it was.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("--pcap %s: %w", path, err)
	}
	return &pcapFile{path: path, f: f, log: log}, nil
}

// wrap returns the link endpoint for the stack: ep, wrapped in the capture
// when there is one.
func (p *pcapFile) wrap(ep gstack.LinkEndpoint) (gstack.LinkEndpoint, error) {
	if p == nil {
		return ep, nil
	}
	c, err := nic.NewCapture(ep, p.f, nic.DefaultSnapLen, p.log)
	if err != nil {
		return nil, fmt.Errorf("--pcap %s: %w", p.path, err)
	}
	p.c = c
	p.log.Info("capturing the front NIC's frames", "pcap", p.path, "snaplen", nic.DefaultSnapLen)
	return c, nil
}

// close flushes the capture and closes the file; call it after the stack
// has stopped.
func (p *pcapFile) close() {
	if p == nil {
		return
	}
	var err error
	if p.c != nil {
		err = p.c.Stop()
	}
	if err = errors.Join(err, p.f.Close()); err != nil {
		p.log.Error("pcap: the capture may be incomplete", "pcap", p.path, "err", err)
	}
}
