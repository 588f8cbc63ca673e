//! The stable text dump every stage prints and snapshot tests read.
//!
//! One line per node, in [`Graph::topo_order`], values numbered densely:
//!
//! ```text
//! graph "tiny" {
//!   %0 = input : f32[1,3,8,8]  ; image
//!   %1 = const #1a2b3c4d [-0.5, 0.75] : f32[4,3,3,3]  ; conv.weight
//!   %2 = conv %0, %1 strides=[1,1] pads=[1,1,1,1] dilations=[1,1] group=1 : (f32[1,3,8,8], f32[4,3,3,3]) -> f32[1,4,8,8]  ; conv
//!   output "y" = %2
//! }
//! ```
//!
//! Constants show their content hash and range, never their content. The text depends
//! only on the graph's structure, attributes and contents, not on node ids.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::graph::{Graph, NodeId};
use crate::op::Op;

impl Graph {
    /// The text dump.
    pub fn dump(&self) -> String {
        let order = self.topo_order();
        let number: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        let mut out = String::new();
        writeln!(out, "graph {:?} {{", self.name).unwrap();
        for &id in &order {
            let node = self.node(id);
            write!(out, "  %{} = {}", number[&id], node.op.name()).unwrap();
            match &node.op {
                Op::Input => write!(out, " : {}", node.ty).unwrap(),
                Op::Constant(t) => write!(out, " {} : {}", t.summary(), node.ty).unwrap(),
                op => {
                    let inputs = self.node_inputs(id);
                    for (i, input) in inputs.iter().enumerate() {
                        let sep = if i == 0 { " " } else { ", " };
                        write!(out, "{sep}%{}", number[input]).unwrap();
                    }
                    out.push_str(&op.attrs_text());
                    out.push_str(" : (");
                    for (i, input) in inputs.iter().enumerate() {
                        let sep = if i == 0 { "" } else { ", " };
                        write!(out, "{sep}{}", self.node(*input).ty).unwrap();
                    }
                    write!(out, ") -> {}", node.ty).unwrap();
                }
            }
            if !node.name.is_empty() {
                write!(out, "  ; {}", node.name).unwrap();
            }
            out.push('\n');
        }
        for o in self.outputs() {
            writeln!(out, "  output {:?} = %{}", o.name, number[&o.node]).unwrap();
        }
        out.push_str("}\n");
        out
    }
}
