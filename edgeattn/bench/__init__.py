"""Host side of the bench: plans workloads, exports (cached), hands specs to the runtime (local
subprocess or remote over SSH), and reports. The host never times anything itself."""
