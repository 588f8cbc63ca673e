//! A thin layer over Cranelift's [`FunctionBuilder`]: 64-bit scalar helpers, counted
//! loops with loop-carried values, and the exact integer rules of the contract
//! (`rshift_round`, clamps) as instruction sequences.

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{BlockArg, InstBuilder, MemFlagsData, Type, Value};
use cranelift_frontend::FunctionBuilder;
use lutq_ir::int::{IntElem, Rounding};

/// Memory flags of every access: the JIT code only touches the arena and the buffers the
/// model owns, so nothing traps; vector accesses may be unaligned.
pub(crate) fn flags() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// Flags of loads from the model's constant buffers (weights, tables), which nothing
/// writes: pure, so Cranelift may move them (next to their use, where x86 folds them
/// into the instruction, e.g. `vbroadcastss` from memory).
pub(crate) fn const_flags() -> MemFlagsData {
    MemFlagsData::new()
        .with_notrap()
        .with_readonly()
        .with_can_move()
}

/// Builds one function: `fn(arena: *mut u8)`.
pub(crate) struct Emitter<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    /// The arena's base address (the function's parameter).
    pub base: Value,
    /// The program's rounding ([`lutq_ir::int::IntGraph::rounding`]).
    pub rounding: Rounding,
}

impl Emitter<'_, '_> {
    pub fn c64(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    pub fn c32(&mut self, v: i32) -> Value {
        self.b.ins().iconst(I32, v as i64)
    }

    /// The address `arena + offset`.
    pub fn arena(&mut self, offset: usize) -> Value {
        let c = self.c64(offset as i64);
        self.b.ins().iadd(self.base, c)
    }

    /// A host address (a buffer the model owns) as a constant.
    pub fn host(&mut self, ptr: *const u8) -> Value {
        self.c64(ptr as i64)
    }

    pub fn add(&mut self, a: Value, b: Value) -> Value {
        self.b.ins().iadd(a, b)
    }

    pub fn addi(&mut self, a: Value, k: i64) -> Value {
        if k == 0 {
            return a;
        }
        self.b.ins().iadd_imm_s(a, k)
    }

    pub fn muli(&mut self, a: Value, k: i64) -> Value {
        match k {
            1 => a,
            _ => self.b.ins().imul_imm_s(a, k),
        }
    }

    /// `base + index · scale` (all i64).
    pub fn index(&mut self, base: Value, index: Value, scale: i64) -> Value {
        let o = self.muli(index, scale);
        self.b.ins().iadd(base, o)
    }

    /// Loads one element widened to i64 (sign or zero extended as its type says).
    pub fn load_elem(&mut self, elem: IntElem, addr: Value) -> Value {
        match elem {
            IntElem::I8 => self.b.ins().sload8(I64, flags(), addr, 0),
            IntElem::U8 => self.b.ins().uload8(I64, flags(), addr, 0),
            IntElem::I32 => self.b.ins().sload32(flags(), addr, 0),
        }
    }

    /// Stores the low bits of an i64 as one element.
    pub fn store_elem(&mut self, elem: IntElem, v: Value, addr: Value) {
        match elem {
            IntElem::I8 | IntElem::U8 => self.b.ins().istore8(flags(), v, addr, 0),
            IntElem::I32 => self.b.ins().istore32(flags(), v, addr, 0),
        };
    }

    pub fn load(&mut self, ty: Type, addr: Value, offset: i32) -> Value {
        self.b.ins().load(ty, flags(), addr, offset)
    }

    /// A load from a constant buffer ([`const_flags`]).
    pub fn load_const(&mut self, ty: Type, addr: Value, offset: i32) -> Value {
        self.b.ins().load(ty, const_flags(), addr, offset)
    }

    pub fn store(&mut self, v: Value, addr: Value, offset: i32) {
        self.b.ins().store(flags(), v, addr, offset);
    }

    /// `rshift_round(v, s)` (or, in ties-to-even programs, `rshift_round_even`) on an
    /// i64, `s` known at compile time.
    pub fn rshift_round(&mut self, v: Value, s: i32) -> Value {
        if s > 0 {
            if s >= 63 {
                return self.c64(0);
            }
            let r = match self.rounding {
                Rounding::HalfUp => self.addi(v, 1i64 << (s - 1)),
                Rounding::HalfEven => {
                    let q = self.b.ins().sshr_imm_u(v, s as i64);
                    let parity = self.b.ins().band_imm_u(q, 1);
                    let r = self.addi(v, (1i64 << (s - 1)) - 1);
                    self.b.ins().iadd(r, parity)
                }
            };
            self.b.ins().sshr_imm_u(r, s as i64)
        } else if s == 0 {
            v
        } else {
            self.b.ins().ishl_imm_u(v, (-s).min(62) as i64)
        }
    }

    /// `clamp(v, lo, hi)` on an i64.
    pub fn clamp(&mut self, v: Value, lo: i32, hi: i32) -> Value {
        let l = self.c64(lo as i64);
        let h = self.c64(hi as i64);
        let v = self.b.ins().smax(v, l);
        self.b.ins().smin(v, h)
    }

    /// `a < b` unsigned, as a flag.
    pub fn ult(&mut self, a: Value, b: i64) -> Value {
        self.b.ins().icmp_imm_s(IntCC::UnsignedLessThan, a, b)
    }

    /// A counted loop `for i in (start..end).step_by(step)` with loop-carried values:
    /// `body(emitter, i, carried) -> carried'`; returns the values after the last
    /// iteration. The bounds are compile-time constants; an empty range emits nothing and
    /// a single iteration no loop.
    pub fn for_range(
        &mut self,
        start: i64,
        end: i64,
        step: i64,
        carried: &[Value],
        body: impl FnOnce(&mut Self, Value, &[Value]) -> Vec<Value>,
    ) -> Vec<Value> {
        if start >= end {
            return carried.to_vec();
        }
        if start + step >= end {
            let i = self.c64(start);
            return body(self, i, carried);
        }
        let types: Vec<Type> = carried
            .iter()
            .map(|&v| self.b.func.dfg.value_type(v))
            .collect();
        let head = self.b.create_block();
        let exit = self.b.create_block();
        self.b.append_block_param(head, I64);
        for &t in &types {
            self.b.append_block_param(head, t);
            self.b.append_block_param(exit, t);
        }
        let s = self.c64(start);
        let args: Vec<BlockArg> = std::iter::once(s)
            .chain(carried.iter().copied())
            .map(BlockArg::Value)
            .collect();
        self.b.ins().jump(head, &args);
        self.b.switch_to_block(head);
        let params = self.b.block_params(head).to_vec();
        let out = body(self, params[0], &params[1..]);
        let next = self.addi(params[0], step);
        let more = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, next, end);
        let again: Vec<BlockArg> = std::iter::once(next)
            .chain(out.iter().copied())
            .map(BlockArg::Value)
            .collect();
        let done: Vec<BlockArg> = out.iter().copied().map(BlockArg::Value).collect();
        self.b.ins().brif(more, head, &again, exit, &done);
        self.b.switch_to_block(exit);
        self.b.block_params(exit).to_vec()
    }

    /// [`for_range`](Self::for_range) without carried values.
    pub fn for_each(&mut self, start: i64, end: i64, body: impl FnOnce(&mut Self, Value)) {
        self.for_range(start, end, 1, &[], |e, i, _| {
            body(e, i);
            Vec::new()
        });
    }
}
