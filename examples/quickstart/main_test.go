package main

import "testing"

// The demo must keep adding up: run checks sent = processed + dead-lettered.
func TestQuickstartMemory(t *testing.T) {
	if err := run("memory://quickstart-test", 120); err != nil {
		t.Fatal(err)
	}
}

// The default: an embedded NATS server, started and stopped by the run.
func TestQuickstartEmbeddedNATS(t *testing.T) {
	if err := run("nats-embedded://?store=temporary", 120); err != nil {
		t.Fatal(err)
	}
}
