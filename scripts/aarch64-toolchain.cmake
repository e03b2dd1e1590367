# CMake toolchain for the aarch64 (arm64) Linux cross build on a Debian
# x86-64 machine (scripts/aarch64 setup; docs/arm.md). It expects what that
# script installs: gcc-aarch64-linux-gnu, the arm64 multiarch -dev packages
# under /usr/lib/aarch64-linux-gnu, and qemu-user-static to run the result.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
# find_library looks in the multiarch directory of the target, not the host's.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# pkg-config must only see the arm64 .pc files: with the host's search path
# it would hand the linker x86-64 libraries. VITC_AARCH64_EXTRA_PC adds the
# directory of the packages that cannot be installed through multiarch
# (Criterion: scripts/aarch64 says why); a cache variable, so that the
# re-runs of CMake a build triggers by itself see it too.
set(VITC_AARCH64_EXTRA_PC "" CACHE PATH "Extra arm64 pkg-config directory")
set(_vitc_pc /usr/lib/aarch64-linux-gnu/pkgconfig /usr/share/pkgconfig)
if(VITC_AARCH64_EXTRA_PC)
  list(PREPEND _vitc_pc ${VITC_AARCH64_EXTRA_PC})
endif()
list(JOIN _vitc_pc ":" _vitc_pc)
set(ENV{PKG_CONFIG_LIBDIR} "${_vitc_pc}")
unset(ENV{PKG_CONFIG_PATH})
# try_compile reads this file again, in the same process: without the
# variable it would set the environment above without the extra directory.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES VITC_AARCH64_EXTRA_PC)

# Programs (python3 for the tests, pkg-config) are the host's; libraries
# and headers are the target's, found through the multiarch paths above.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)

# ctest runs the test executables under qemu. The CPU it emulates is
# QEMU_CPU's (qemu's default, max, reports every feature it emulates:
# DotProd, I8MM, BF16, so every kernel path runs; cortex-a72 is a
# Raspberry Pi 4, cortex-a76 a Pi 5). The tests also start the built vit
# through the shell: binfmt_misc runs it under qemu, with the same
# QEMU_CPU (scripts/aarch64 registers the handler and exports QEMU_CPU).
find_program(VITC_QEMU_AARCH64 qemu-aarch64-static qemu-aarch64)
if(VITC_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${VITC_QEMU_AARCH64})
endif()

# RPATH rather than RUNPATH: the unpacked Criterion's own dependency
# (libnanomsg.so.5) is found through the test executable's path only so.
set(CMAKE_EXE_LINKER_FLAGS_INIT "-Wl,--disable-new-dtags")
