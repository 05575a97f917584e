package jobs

// CheckMembers exposes checkMembers to the benchmark.
var CheckMembers = checkMembers
