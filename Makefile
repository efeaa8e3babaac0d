# fitalloc — see README.md.
#   make                 build ./allocator.so (release)
#   make test            every test; make test run=4 / run='4 8 12' for numbered cases
#   make bench               benchmarks (bench/results/)
#   make fuzz            fuzz every target 180 s (nightly + cargo-fuzz; fuzz/run.sh)
#   make install PREFIX=/usr/local   lib/libfitalloc.so, include/allocator.h, pkg-config file
CARGO ?= cargo
PREFIX ?= /usr/local
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

.PHONY: all test bench fuzz install clean FORCE

all: allocator.so libfitalloc.so fitalloc

allocator.so: FORCE
	$(CARGO) build --release -p fitalloc-preload
	cp target/release/libfitalloc_preload.so $@.tmp && mv -f $@.tmp $@

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

clean:
	$(CARGO) clean
	rm -f allocator.so libfitalloc.so fitalloc
	rm -rf tests/build
