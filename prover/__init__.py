"""The challenger: re-derives every batch from L1 data and disputes wrong
state roots. Not built yet; the L2 node and the L1 contracts it will use are
in node/, sequencer/ and l1_stub/."""
