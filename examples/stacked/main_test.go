package main

import "testing"

func TestStacked(t *testing.T) {
	if err := run("memory://stacked-events-test", "memory://stacked-audit-test"); err != nil {
		t.Fatal(err)
	}
}
