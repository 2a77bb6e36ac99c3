package main

import "testing"

// The demo must keep adding up: run checks sent = processed + dead-lettered.
func TestQuickstartMemory(t *testing.T) {
	if err := run("memory://quickstart-test", 120); err != nil {
		t.Fatal(err)
	}
}
