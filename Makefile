# fitalloc — see README.md.
#   make                 build ./allocator.so (release)
#   make test            every test; make test run=4 / run='4 8 12' for numbered cases
#   make soak SOAK_SECONDS=3600   the stress test (tests/c/stress.c) for an hour
#   make bench               benchmarks (bench/results/)
#   make instr               instructions per malloc+free under callgrind (bench/instr.py)
#   make fuzz            fuzz every target 180 s (nightly + cargo-fuzz; fuzz/run.sh)
#   make pgo             retake the profile allocator.so is built with (pgo/train.sh)
#   make install PREFIX=/usr/local   lib/libfitalloc.so, include/allocator.h, pkg-config file
CARGO ?= cargo
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

.PHONY: all test bench instr soak fuzz install clean pgo FORCE

all: allocator.so libfitalloc.so fitalloc

# Built with the committed profile pgo/fitalloc.profdata (profile-guided
# optimisation; `make pgo` retakes it, see pgo/train.sh), in a target
# directory of its own (other flags than the workspace's other builds).
# NO_PGO=1 builds without it; so does a rustc that cannot read it (a warning).
allocator.so: FORCE
	@if [ -z "$(NO_PGO)" ] && [ -f pgo/fitalloc.profdata ] && \
	  RUSTFLAGS="$$RUSTFLAGS -Cprofile-use=$(CURDIR)/pgo/fitalloc.profdata" \
	  $(CARGO) build --release -p fitalloc-preload --target-dir target/pgo-use; then \
	  cp target/pgo-use/release/libfitalloc_preload.so $@.tmp; \
	else \
	  [ -n "$(NO_PGO)" ] || echo "warning: allocator.so built without pgo/fitalloc.profdata" >&2; \
	  $(CARGO) build --release -p fitalloc-preload && \
	  cp target/release/libfitalloc_preload.so $@.tmp; \
	fi && mv -f $@.tmp $@

# Retakes the profile allocator.so is built with (needs llvm-profdata >= 19).
pgo:
	@./pgo/train.sh

# The command-line tool (run / replay / map), beside allocator.so.
fitalloc: FORCE
	$(CARGO) build --release -p fitalloc-cli
	cp target/release/fitalloc $@.tmp && mv -f $@.tmp $@

# The same library under its SONAME, for programs linked against ./allocator.so.
libfitalloc.so: allocator.so
	ln -sf allocator.so $@

# Benchmarks against glibc (and jemalloc/tcmalloc/mimalloc when installed);
# not part of `make test`. Results in bench/results/.
bench: allocator.so
	@./bench/run.sh $(args)

# Instructions per operation under callgrind against glibc: deterministic,
# whatever the machine's load (args='--policies', args='--only churn').
instr: allocator.so
	@./bench/run.sh --instructions $(args)

# Fuzzing (cargo-fuzz on nightly; not part of `make test`, whose case 44 is a
# 60 s smoke run): every target of fuzz/Cargo.toml, or FUZZ_TARGETS, for
# FUZZ_SECONDS each, e.g. make fuzz FUZZ_SECONDS=3600 FUZZ_TARGETS=trace_replay
FUZZ_SECONDS ?= 180
FUZZ_TARGETS ?=
fuzz:
	@./fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

install: allocator.so
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 allocator.so $(DESTDIR)$(PREFIX)/lib/libfitalloc.so
	install -m 644 include/allocator.h $(DESTDIR)$(PREFIX)/include/allocator.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' fitalloc.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/fitalloc.pc

test: allocator.so libfitalloc.so fitalloc
	@./tests/run.sh $(run)

# Soak: tests/c/stress.c (the program of test 28) for SOAK_SECONDS, in runs of
# SOAK_CHUNK seconds that cycle the four policies (every fifth run also with
# ALLOCATOR_CHECK=1), each with the next seed from SOAK_SEED (default: the
# time). Stops at the first failure, printing its log and the command that
# repeats it.
SOAK_SECONDS ?= 600
SOAK_CHUNK ?= 60
SOAK_THREADS ?= 8
soak: allocator.so
	@mkdir -p tests/build/bin tests/build/tmp
	@gcc -O1 -g -Wall -Wextra -Werror -pthread -Iinclude -o tests/build/bin/stress tests/c/stress.c
	@end=$$(( $$(date +%s) + $(SOAK_SECONDS) )); seed=$${SOAK_SEED:-$$(date +%s)}; i=0; \
	log=tests/build/tmp/soak.log; \
	echo "soak: $(SOAK_SECONDS) s of tests/c/stress.c, $(SOAK_THREADS) threads, runs of $(SOAK_CHUNK) s, seeds from $$seed"; \
	while left=$$(( end - $$(date +%s) )); [ $$left -gt 0 ]; do \
	  chunk=$$(( left < $(SOAK_CHUNK) ? left : $(SOAK_CHUNK) )); \
	  p=$$(echo first_fit next_fit best_fit worst_fit | cut -d' ' -f$$(( i % 4 + 1 ))); \
	  check=; [ $$(( i % 5 )) -ne 4 ] || check=ALLOCATOR_CHECK=1; \
	  cmd="ALLOCATOR_ALGORITHM=$$p $$check LD_PRELOAD=$(CURDIR)/allocator.so tests/build/bin/stress seed=$$((seed + i)) threads=$(SOAK_THREADS) seconds=$$chunk"; \
	  rc=0; timeout $$((chunk + 120)) env $$cmd >$$log 2>&1 || rc=$$?; \
	  if [ $$rc -ne 0 ] || [ "$$(tail -n 1 $$log)" != "stress: all ok" ]; then \
	    echo "SOAK FAILED in run $$i (after $$i good runs): exit status $$rc$$([ $$rc != 124 ] || echo ': timed out, deadlock?')"; \
	    sed 's/^/    /' $$log; echo "to repeat it: $$cmd"; exit 1; \
	  fi; \
	  echo "ok   run $$i: $$p$${check:+ + $$check}, $$(sed -n 's/^ok   stress: //p' $$log), $$(sed -n 's/^ok   fork: \([0-9]*\).*/\1/p' $$log) forks"; \
	  i=$$((i + 1)); \
	done; \
	echo "soak: $$i runs, all ok"

clean:
	$(CARGO) clean
	rm -f allocator.so libfitalloc.so fitalloc
	rm -rf tests/build
