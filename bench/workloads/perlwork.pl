#!/usr/bin/perl
# (f) A deterministic text-processing Perl workload.
#
# Generates text from a fixed-seed generator, then: counts words and bigrams
# in hashes, rewrites every line with regular-expression substitutions,
# builds a hash of arrays of records and sorts it several ways, wraps
# paragraphs, and grows and splices strings. Perl allocates
# every scalar, string buffer, array and hash through malloc (Debian's perl
# is built without its own malloc). Prints one line: a SHA-256 of everything
# it computed (hash keys are always sorted: Perl's hash order is randomized
# per process), so the harness can check that every allocator produced the
# same result.
# Usage: perl perlwork.pl [scale]   (scale 1 is the full-size run)
use strict;
use warnings;
use Digest::SHA;

my $scale = @ARGV ? $ARGV[0] : 1;
my $sha = Digest::SHA->new(256);
my @WORDS = qw(static const unsigned return while struct buffer size count
  index value node tree list head tail next prev data key hash alloc free
  region block split merge policy first best worst fit lock thread page map
  cache span header check alpha beta gamma delta epsilon zeta theta kappa);

# A small linear congruential generator: the same numbers on every perl.
my $state = 20240601;
sub rnd { $state = ($state * 1103515245 + 12345) % 2147483648; return $state % $_[0]; }
sub word { return $WORDS[rnd(scalar @WORDS)]; }

for my $round (1 .. 2) {
    my $nlines = int(30000 * $scale);
    my @lines;
    for my $i (1 .. $nlines) {
        my $n = 3 + rnd(12);
        push @lines, join(" ", map { word() . (rnd(5) ? "" : rnd(1000)) } 1 .. $n)
          . sprintf(" <%s\@%s.example> #%x", word(), word(), rnd(1 << 30));
    }

    # word and bigram counts
    my (%count, %bigram);
    for my $l (@lines) {
        my @w = grep { /^[a-z]+\d*$/ } split / /, $l;
        $count{$_}++ for @w;
        $bigram{"$w[$_ - 1] $w[$_]"}++ for 1 .. $#w;
    }
    my @top = (sort { $bigram{$b} <=> $bigram{$a} || $a cmp $b } keys %bigram)[0 .. 49];
    $sha->add(join(",", map { "$_=$count{$_}" } sort keys %count));
    $sha->add(join(",", map { "$_=$bigram{$_}" } @top));

    # substitutions: reverse hex tags, capitalise addresses, number words
    my $subst = 0;
    for my $l (@lines) {
        my $m = $l;
        $subst += ($m =~ s/#([0-9a-f]+)/"#" . reverse($1)/ge);
        $subst += ($m =~ s/<(\w+)\@(\w+)\.example>/<\U$2\E at \u$1>/g);
        $subst += ($m =~ s/\b([a-z]+)(\d+)\b/$2-$1/g);
        $m =~ tr/a-e/A-E/;
        $sha->add($m) if rnd(16) == 0;
        $l = $m;
    }
    $sha->add("subst=$subst");

    # records: a hash of arrays of hashes, sorted several ways
    my %by_key;
    for my $i (0 .. int(20000 * $scale)) {
        my $r = { id => $i, name => join("-", map { word() } 0 .. rnd(3)),
                  score => rnd(100000) / 7, tags => [map { word() } 0 .. rnd(5)] };
        push @{ $by_key{ $r->{name} =~ /^(\w+)/ ? $1 : "" } }, $r;
    }
    for my $k (sort keys %by_key) {
        my @s = sort { $b->{score} <=> $a->{score} || $a->{id} <=> $b->{id} } @{ $by_key{$k} };
        my %tagc;
        $tagc{$_}++ for map { @{ $_->{tags} } } @s;
        $sha->add($k, scalar(@s), $s[0]{id}, join(",", map { "$_:$tagc{$_}" } sort keys %tagc));
    }

    # paragraphs of 8 lines wrapped to 60 columns
    for (my $i = 0; $i + 8 <= @lines; $i += 8) {
        my $para = join(" ", @lines[$i .. $i + 7]);
        $para =~ s/(.{1,59})(?: +|$)/$1\n/g;
        $sha->add($para);
    }

    # strings grown, searched and spliced
    my $buf = "";
    for my $i (1 .. int(50000 * $scale)) {
        $buf .= word() . ($i % 10 ? " " : "\n");
        if (length($buf) > 4096) {
            my $cut = index($buf, "\n", 1024);
            substr($buf, 0, $cut + 1, "") if $cut > 0;
            $sha->add(uc(substr($buf, 0, 64)));
        }
    }
    $sha->add($buf);
}
print $sha->hexdigest, "\n";
