// Which paths a file pattern selects.
#include <gtest/gtest.h>

#include "rewrite/rewrite.h"

namespace netbootfs::rewrite {
namespace {

struct Case {
  const char* pattern;
  const char* path;
  bool matches;
};

TEST(Glob, Table) {
  const Case cases[] = {
      // No '/': the base name, in any directory.
      {"*.ipxe", "boot.ipxe", true},
      {"*.ipxe", "ipxe/default.ipxe", true},
      {"*.ipxe", "a/b/c/menu.ipxe", true},
      {"*.ipxe", "boot.ipxe.bak", false},
      {"*.ipxe", "ipxe.d/kernel", false},
      {"*.ipxe", "boot.IPXE", false},  // case-sensitive
      {"grub.cfg*", "grub.cfg", true},
      {"grub.cfg*", "EFI/BOOT/grub.cfg", true},
      {"grub.cfg*", "grub/grub.cfg-01-52-54-00-12-34-56", true},
      {"grub.cfg*", "grub/grub.cfg.d/x", false},
      {"grub.cfg*", "mygrub.cfg", false},
      {"default", "pxelinux.cfg/default", true},
      {"*", "images/sles/linux", true},
      {"?.cfg", "a.cfg", true},
      {"?.cfg", "ab.cfg", false},
      {"[a-c].cfg", "grub/b.cfg", true},
      {"[a-c].cfg", "grub/d.cfg", false},
      // With '/': the whole path, '*' stays within one component.
      {"pxelinux.cfg/*", "pxelinux.cfg/default", true},
      {"pxelinux.cfg/*", "pxelinux.cfg/01-52-54-00-12-34-56", true},
      {"pxelinux.cfg/*", "bios/pxelinux.cfg/default", false},
      {"pxelinux.cfg/*", "pxelinux.cfg/sub/default", false},
      {"pxelinux.cfg/*", "pxelinux.cfg", false},
      {"*/pxelinux.cfg/*", "bios/pxelinux.cfg/default", true},
      {"*/pxelinux.cfg/*", "efi64/pxelinux.cfg/C0A80001", true},
      {"*/pxelinux.cfg/*", "pxelinux.cfg/default", false},
      {"*/pxelinux.cfg/*", "a/b/pxelinux.cfg/default", false},
      {"grub/*.cfg", "grub/grub.cfg", true},
      {"grub/*.cfg", "grub/x86_64_menu_items.cfg", true},
      {"grub/*.cfg", "grub/x86_64-efi/grub.cfg", false},
      {"grub/*.cfg", "boot/grub/grub.cfg", false},
      {"boot/*.cfg", "boot/menu.cfg", true},
      {"boot/*.cfg", "boot/x86_64/loader/isolinux.cfg", false},
      // A leading '/' on either side means the mount's root.
      {"/pxelinux.cfg/*", "pxelinux.cfg/default", true},
      {"pxelinux.cfg/*", "/pxelinux.cfg/default", true},
      {"*.ipxe", "/boot.ipxe", true},
      // Degenerate input.
      {"*.cfg", "", false},
      {"*", "", true},
      {"", "a", false},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(glob_matches(c.pattern, c.path), c.matches)
        << "pattern '" << c.pattern << "' path '" << c.path << "'";
  }
}

TEST(Glob, DefaultPatterns) {
  RuleSet set = RuleSet::defaults("uyuni.lan", "", "proxy.lan");
  const Case cases[] = {
      {"", "pxelinux.cfg/default", true},
      {"", "pxelinux.cfg/01-aa-bb-cc-dd-ee-ff", true},
      {"", "bios/pxelinux.cfg/default", true},
      {"", "grub/grub.cfg", true},
      {"", "grub.cfg", true},
      {"", "EFI/BOOT/grub.cfg", true},
      {"", "grub.cfg-01-aa-bb-cc-dd-ee-ff", true},
      {"", "grub/x86_64_menu_items.cfg", true},
      {"", "grub2/menu.cfg", true},
      {"", "boot/grub/loopback.cfg", true},
      {"", "boot/grub2/menu.cfg", true},
      {"", "grub/system/01:aa:bb:cc:dd:ee:ff", true},
      {"", "grub/system_link/myhost", true},
      {"", "boot/menu.cfg", true},
      {"", "boot.ipxe", true},
      {"", "ipxe/default.ipxe", true},
      // Binaries and unrelated files stay untouched (and are never read to list them).
      {"", "pxelinux.0", false},
      {"", "grub/grubx64.efi", false},
      {"", "grub/x86_64-efi/normal.mod", false},
      {"", "images/sles15sp5/linux", false},
      {"", "images/sles15sp5/initrd", false},
      {"", "ipxe.efi", false},
      {"", "undionly.kpxe", false},
      {"", "etc/some.conf", false},
      {"", "images/x/isolinux.cfg", false},
  };
  for (const Case& c : cases) EXPECT_EQ(set.matches(c.path), c.matches) << c.path;
}

}  // namespace
}  // namespace netbootfs::rewrite
