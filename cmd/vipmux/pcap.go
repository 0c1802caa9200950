package main

import (
	"fmt"
	"os"
)

// createPcap creates (or truncates) the capture file of serve --pcap at
// path, mode 0600: it will hold every client's traffic. The gateway writes
// the front NIC's frames into it and closes it (gateway.Options.OpenCapture).
// Empty path: nil, nil.
func createPcap(path string) (*os.File, error) {
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
	return f, nil
}
