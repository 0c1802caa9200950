//go:build !linux

package nic

import "errors"

var errUnsupported = errors.New("vipmux's front link needs Linux")

func openAFPacket(Options) (*Link, error) { return nil, errUnsupported }
func openTAP(Options) (*Link, error)      { return nil, errUnsupported }

func withMissingCaps(err error) error { return err }
