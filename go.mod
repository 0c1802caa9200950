module github.com/vipmux/vipmux

go 1.26.8
