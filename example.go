// Package vipmux holds what belongs to the repository as a whole rather
// than to one package: the example configuration, config.example.toml,
// which documents every key and from which `vipmux man --section 5` makes
// the vipmux.toml(5) manual page.
package vipmux

import _ "embed"

// ExampleConfig is config.example.toml.
//
//go:embed config.example.toml
var ExampleConfig string
