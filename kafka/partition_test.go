package kafka

import "testing"

// The commit position moves only past offsets settled without a gap.
func TestCommitPositionIsContiguous(t *testing.T) {
	p := newPartition(&generation{s: &subscription{}}, 0, 10)
	for _, off := range []int64{10, 11, 12, 14, 15} { // 13 was compacted away
		p.track(off)
	}
	if pos, moved := p.position(); pos != 10 || moved {
		t.Fatalf("nothing settled: %d %v", pos, moved)
	}
	p.settled(12)
	p.settled(11)
	if pos, _ := p.position(); pos != 10 {
		t.Fatalf("10 runs still: position %d", pos)
	}
	p.settled(10)
	if pos, moved := p.position(); pos != 13 || !moved {
		t.Fatalf("10-12 settled: position %d %v", pos, moved)
	}
	p.committedAt(13)
	p.settled(15)
	if pos, moved := p.position(); pos != 13 || moved {
		t.Fatalf("14 runs still: position %d %v", pos, moved)
	}
	p.settled(14)
	if pos, _ := p.position(); pos != 16 {
		t.Fatalf("all settled: position %d", pos)
	}
	p.settled(99) // not read: ignored
	if pos, _ := p.position(); pos != 16 {
		t.Fatalf("an unknown offset moved the position to %d", pos)
	}
}

func TestCommitTrackerCompacts(t *testing.T) {
	p := newPartition(&generation{s: &subscription{}}, 0, 0)
	for off := range int64(5000) {
		p.track(off)
		p.settled(off)
	}
	if pos, _ := p.position(); pos != 5000 {
		t.Fatalf("position %d", pos)
	}
	if len(p.offs) > 2048 {
		t.Fatalf("the tracker keeps %d settled offsets", len(p.offs))
	}
}
